"""The retraining report: ``retrain.md`` for people (and the CI pull request), ``retrain.json`` for tools."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from lit_bundle.atomic import write_atomic

if TYPE_CHECKING:
    from training.retrain import RetrainResult


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def report_markdown(result: RetrainResult) -> str:
    r = result
    overrides = r.options.overrides
    if r.passed:
        title = f"# Retraining {r.bundle}: gate passed, v{r.new_version} promoted"
    else:
        title = f"# Retraining {r.bundle}: gate FAILED, nothing promoted"
    where = f"`{r.repository}`"
    if r.options.dry_run:
        where += f" (dry run: a temporary copy of `{r.source_repository}`)"
    lines = [
        title,
        "",
        f"Repository: {where}",
        "",
        "## Gate",
        "",
        "| check | result | detail |",
        "|---|---|---|",
    ]
    lines += [f"| {c.name} | {'pass' if c.passed else 'FAIL'} | {c.detail} |" for c in r.checks]
    previous = f"active v{r.previous_version}" if r.previous_version is not None else "active (none)"
    lines += [
        "",
        f"## Scores on the gate set (gated: {r.gate_metric})",
        "",
        f"Gate set: {r.gate_set['summary']}.",
        "",
        "Both models are scored now, on the same images, through their ONNX encoders as served, each "
        "with the templates it serves with.",
        "",
        f"| metric | candidate | {previous} |",
        "|---|---|---|",
    ]
    for key, value in r.candidate.items():
        before = r.previous.get(key) if r.previous else None
        lines.append(
            f"| {key}{' (gated)' if key == r.gate_metric else ''} | {_percent(value)} | {_percent(before)} |"
        )
    lines += [
        "",
        "## Versions",
        "",
        f"- previously active: {'v' + str(r.previous_version) if r.previous_version is not None else 'none'}",
        f"- published and promoted: {'v' + str(r.new_version) if r.new_version is not None else 'nothing'}",
        f"- active now: {'v' + str(r.active_version) if r.active_version is not None else 'none'}",
    ]
    if r.published_identical_to_gated is not None:
        lines.append(
            f"- published files identical to the gated candidate's: {r.published_identical_to_gated}"
        )
    lines += ["", "## Timings (seconds)", "", "| " + " | ".join(r.timings) + " |"]
    lines += ["|" + "---|" * len(r.timings), "| " + " | ".join(f"{v:.1f}" for v in r.timings.values()) + " |"]
    lines += [
        "",
        "## Files",
        "",
        f"- run folder: `{r.out}` (candidate bundle in `{r.out / 'candidate'}`)",
        f"- checkpoint: `{r.checkpoint}`",
        f"- training report (torch evaluation): `{r.out / 'lit' / 'report' / 'report.md'}`",
        f"- config: `{r.config}`" + (f", overrides: `{' '.join(overrides)}`" if overrides else ""),
    ]
    return "\n".join(lines) + "\n"


def report_json(result: RetrainResult) -> str:
    data = asdict(result)
    data.pop("report")
    options = data.pop("options").model_dump(mode="json")
    # the options that decided the outcome stay where earlier reports had them
    data.update({key: options[key] for key in ("dry_run", "min_accuracy", "max_regression", "overrides")})
    data["options"] = options
    data["decision"] = "promoted" if result.passed else "rejected"
    data["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return json.dumps(data, indent=1, default=str) + "\n"


def write_report(result: RetrainResult, report_dir: Path) -> dict[str, Path]:
    paths = {"markdown": report_dir / "retrain.md", "json": report_dir / "retrain.json"}
    write_atomic(paths["markdown"], report_markdown(result))
    write_atomic(paths["json"], report_json(result))
    return paths
