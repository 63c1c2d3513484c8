"""Zero-shot evaluation: prompt-ensembled classifiers, top-k accuracy, retrieval recall and a report.

Everything here works on embedding tensors; models enter only as an ``encode_text`` callable. Ranks are
computed pessimistically: a wrong candidate scoring *equal* to the right one counts as ranked ahead of it,
so a collapsed model (all scores equal) scores 0, not chance or 1.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from lit_bundle.atomic import write_atomic
from lit_bundle.prompts import expand_prompts

Metric = float | int | str


@torch.no_grad()
def build_classifier(
    encode_text: Callable[[list[str]], torch.Tensor],
    class_names: Sequence[str],
    templates: Sequence[str],
    batch_size: int = 256,
    progress: bool = True,
) -> torch.Tensor:
    """Prompt ensembling (CLIP/LiT): per class, mean of the L2-normalised template embeddings, renormalised.

    Texts of all classes are embedded together in batches of ``batch_size``. Returns a (C, D) float32
    tensor on the device ``encode_text`` returns.
    """
    if not class_names or not templates:
        raise ValueError("build_classifier needs at least one class name and one template")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    texts = expand_prompts(class_names, templates)
    owner = torch.arange(len(class_names)).repeat_interleave(len(templates))
    sums: torch.Tensor | None = None
    with tqdm(total=len(texts), desc="zero-shot classifier", unit="text", disable=not progress) as bar:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            emb = torch.as_tensor(encode_text(chunk)).float()
            if emb.ndim != 2 or emb.shape[0] != len(chunk):
                raise ValueError(f"encode_text returned shape {tuple(emb.shape)} for {len(chunk)} texts")
            if sums is None:
                sums = emb.new_zeros(len(class_names), emb.shape[1])
            idx = owner[start : start + len(chunk)].to(emb.device)
            sums.index_add_(0, idx, F.normalize(emb, dim=-1))
            bar.update(len(chunk))
    assert sums is not None
    return F.normalize(sums / len(templates), dim=-1)


@torch.no_grad()
def zero_shot_scores(image_emb: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """Cosine-similarity logits (N, C) between image embeddings (N, D) and class embeddings (C, D)."""
    image = F.normalize(image_emb.float(), dim=-1)
    classes = F.normalize(classifier.float().to(image.device), dim=-1)
    return image @ classes.T


def _true_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each row's target column; ties and NaNs count against the target."""
    scores = torch.nan_to_num(scores.float(), nan=-math.inf)
    true = scores.gather(1, targets.view(-1, 1))
    return (scores >= true).sum(dim=1) - 1


@torch.no_grad()
def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Fraction of rows whose label is among the k best scores, as ``{"top1": .., "top5": ..}``.

    A k larger than the number of classes is clamped (it then scores 1.0).
    """
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError(f"scores must be (N, C) with N > 0, got {tuple(scores.shape)}")
    labels = torch.as_tensor(labels, device=scores.device).long().view(-1)
    num_classes = scores.shape[1]
    if labels.numel() != scores.shape[0]:
        raise ValueError(f"{labels.numel()} labels for {scores.shape[0]} score rows")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes})")
    ranks = _true_ranks(scores, labels)
    return {f"top{k}": (ranks < min(k, num_classes)).float().mean().item() for k in ks}


def _retrieval_ranks(
    queries: torch.Tensor, keys: torch.Tensor, positive: Callable[[int, int], torch.Tensor], chunk: int
) -> torch.Tensor:
    """0-based rank of each query's best positive key; ties and NaNs count against it.

    ``positive(start, stop)`` is the (stop - start, K) boolean mask of the right keys of those queries."""
    ranks = []
    for start in range(0, queries.shape[0], chunk):
        sims = torch.nan_to_num(queries[start : start + chunk] @ keys.T, nan=-math.inf)
        mask = positive(start, start + sims.shape[0])
        best = sims.masked_fill(~mask, -math.inf).max(dim=1, keepdim=True).values
        ranks.append(((sims >= best) & ~mask).sum(dim=1))
    return torch.cat(ranks)


@torch.no_grad()
def retrieval_recall(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk: int = 4096,
    text_image: torch.Tensor | None = None,
) -> dict[str, float]:
    """Recall@k for image->text and text->image retrieval.

    Text ``j`` describes image ``text_image[j]`` (default: image ``j``, pairs aligned by index). An image
    may have several texts (COCO-style): image->text counts a hit when *any* of its texts ranks within k,
    text->image when its one image does. Every image needs at least one text. Keys are ``i2t_r{k}`` and
    ``t2i_r{k}``; k is clamped to the number of candidates. Similarities are computed ``chunk`` rows at
    a time, so the full matrix never has to fit in memory at once.
    """
    shapes = f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}"
    if image_emb.ndim != 2 or text_emb.ndim != 2 or image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(f"need (N, D) and (T, D) embeddings of one width, got {shapes}")
    n, t = image_emb.shape[0], text_emb.shape[0]
    owner = torch.arange(t) if text_image is None else torch.as_tensor(text_image).long().view(-1)
    if n == 0 or owner.numel() != t or (text_image is None and n != t):
        raise ValueError(f"need equal, non-empty (N, D) embeddings, got {shapes}")
    if owner.min() < 0 or owner.max() >= n or torch.unique(owner).numel() != n:
        raise ValueError(f"text_image must map the {t} texts onto all {n} images, each image at least once")
    image = F.normalize(image_emb.float(), dim=-1)
    text = F.normalize(text_emb.float().to(image.device), dim=-1)
    owner = owner.to(image.device)
    images = torch.arange(n, device=image.device)

    def texts_of(start: int, stop: int) -> torch.Tensor:
        return images[start:stop, None] == owner[None, :]

    def image_of(start: int, stop: int) -> torch.Tensor:
        return owner[start:stop, None] == images[None, :]

    out: dict[str, float] = {}
    for prefix, ranks, candidates in (
        ("i2t", _retrieval_ranks(image, text, texts_of, chunk), t),
        ("t2i", _retrieval_ranks(text, image, image_of, chunk), n),
    ):
        for k in ks:
            out[f"{prefix}_r{k}"] = (ranks < min(k, candidates)).float().mean().item()
    return out


def confusion_matrix(labels: Any, predictions: Any, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts; rows are true classes, columns predicted classes."""
    true = np.asarray(torch.as_tensor(labels).cpu(), dtype=np.int64).ravel()
    pred = np.asarray(torch.as_tensor(predictions).cpu(), dtype=np.int64).ravel()
    if true.shape != pred.shape:
        raise ValueError(f"{true.size} labels but {pred.size} predictions")
    for name, values in (("labels", true), ("predictions", pred)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} must lie in [0, {num_classes})")
    counts = np.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def most_confused(confusion: np.ndarray, names: Sequence[str], limit: int = 10) -> list[dict[str, Any]]:
    """The ``limit`` largest off-diagonal cells: which true class was taken for which, how often."""
    confusion = np.asarray(confusion)
    rows = confusion.sum(axis=1)
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:limit]
    cells = [np.unravel_index(i, off.shape) for i in order]
    return [
        {
            "true": names[t],
            "predicted": names[p],
            "count": int(off[t, p]),
            "fraction": float(off[t, p] / rows[t]),
        }
        for t, p in cells
        if off[t, p] > 0
    ]


# ---------------------------------------------------------------------------------------------- report


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy/torch scalars unwrapped, non-finite floats become null."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor | np.ndarray | np.generic):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _dumps_report(report: dict[str, Any]) -> str:
    """Indented JSON with short lines: one line per history entry or confusion row, flat lists inline."""
    items = []
    for key, value in _jsonable(report).items():
        if isinstance(value, list) and value and all(isinstance(v, dict | list) for v in value):
            rows = ",\n".join("    " + json.dumps(v, allow_nan=False) for v in value)
            body = "[\n" + rows + "\n  ]"
        elif isinstance(value, list):
            body = json.dumps(value, allow_nan=False)
        else:
            body = json.dumps(value, indent=2, allow_nan=False).replace("\n", "\n  ")
        items.append(f"  {json.dumps(key)}: {body}")
    return "{\n" + ",\n".join(items) + "\n}\n"


def _format_metric(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value).replace("|", "\\|")
    return f"{value:.4f}"


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool)


def _plot_history(path: Path, title: str, history: Sequence[dict]) -> bool:
    """Loss vs step, plus one shared-x panel per other numeric key (lr, temperature, ...)."""
    from matplotlib.figure import Figure

    keys: list[str] = []
    for entry in history:
        keys += [k for k, v in entry.items() if k != "step" and k not in keys and _numeric(v)]
    if not keys:
        return False
    keys.sort(key=lambda k: k != "loss")  # loss first, the rest in first-seen order
    keys = keys[:6]
    fig = Figure(figsize=(8, 3 + 1.8 * (len(keys) - 1)), layout="constrained")
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    for ax, key in zip(axes, keys, strict=True):
        points = [(e.get("step", i), e[key]) for i, e in enumerate(history) if _numeric(e.get(key))]
        steps, values = zip(*points, strict=True)
        ax.plot(steps, values, lw=1.2, marker="." if len(points) < 50 else None)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0].set_title(title)
    axes[-1].set_xlabel("step")
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110), binary=True)
    return True


def _plot_confusion(
    path: Path, title: str, confusion: np.ndarray, names: Sequence[str], highlight: Sequence[int]
) -> None:
    """Row-normalised confusion matrix; highlighted classes get red, bold tick labels."""
    from matplotlib.figure import Figure

    n = confusion.shape[0]
    rows = confusion.sum(axis=1, keepdims=True)
    frac = np.divide(confusion, rows, out=np.zeros(confusion.shape, dtype=float), where=rows > 0)
    side = float(np.clip(0.15 * n + 3, 6, 20))
    fig = Figure(figsize=(side, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.6, label="fraction of true class")
    step = max(1, math.ceil(n / 100))
    ticks = np.arange(0, n, step)
    fontsize = float(np.clip(400 / len(ticks), 4, 10))
    ax.set_xticks(ticks, [names[i] for i in ticks], rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, [names[i] for i in ticks], fontsize=fontsize)
    marked = set(highlight)
    for axis_labels in (ax.get_xticklabels(), ax.get_yticklabels()):
        for i, label in zip(ticks, axis_labels, strict=True):
            if int(i) in marked:
                label.set_color("tab:red")
                label.set_fontweight("bold")
    if n <= 16:
        for (r, c), count in np.ndenumerate(confusion):
            if count:
                colour = "white" if frac[r, c] > 0.5 else "black"
                ax.text(c, r, str(count), ha="center", va="center", fontsize=8, color=colour)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}: confusion matrix" + ("  (red: highlighted classes)" if marked else ""))
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100), binary=True)


def write_report(
    out_dir: Path,
    title: str,
    metrics: dict[str, Metric],
    class_names: Sequence[str] | None = None,
    confusion: np.ndarray | None = None,
    history: Sequence[dict] | None = None,
    highlight_classes: Sequence[int] | None = None,
    data: Sequence[dict[str, Any]] = (),
) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and, when data is given, ``loss.png`` and ``confusion.png``.

    ``data`` describes the evaluation sets the metrics came from (one table row each); with a confusion
    matrix the report also lists the most frequent confusions.

    Every file is written atomically. Returns the written paths under the keys ``json``, ``markdown``,
    ``loss`` and ``confusion`` (the last two only when drawn).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    highlight = [int(i) for i in highlight_classes or ()]
    written: dict[str, Path] = {}

    if history and _plot_history(out_dir / "loss.png", title, history):
        written["loss"] = out_dir / "loss.png"

    report: dict[str, Any] = {"title": title, "metrics": metrics, "history": list(history or [])}
    if confusion is not None:
        confusion = np.asarray(confusion)
        n = confusion.shape[0]
        if confusion.shape != (n, n):
            raise ValueError(f"confusion must be square, got {confusion.shape}")
        names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
        if len(names) != n:
            raise ValueError(f"{len(names)} class names for a {n}x{n} confusion matrix")
        if any(not 0 <= i < n for i in highlight):
            raise ValueError(f"highlight_classes must lie in [0, {n})")
        _plot_confusion(out_dir / "confusion.png", title, confusion, names, highlight)
        written["confusion"] = out_dir / "confusion.png"
        rows = confusion.sum(axis=1)
        report["per_class_accuracy"] = {
            name: (float(confusion[i, i] / rows[i]) if rows[i] else None) for i, name in enumerate(names)
        }
        report["confusion"] = confusion
        report["most_confused"] = most_confused(confusion, names)
    if data:
        report["data"] = list(data)
    if class_names is not None:
        report["class_names"] = list(class_names)
    if highlight:
        report["highlight_classes"] = highlight

    written["markdown"] = out_dir / "report.md"
    written["json"] = out_dir / "report.json"
    report["files"] = {key: path.name for key, path in written.items()}

    lines = [f"# {title}", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {_format_metric(k)} | {_format_metric(v)} |" for k, v in metrics.items()]
    if highlight:
        named = [
            str(class_names[i]) if class_names is not None and i < len(class_names) else str(i)
            for i in highlight
        ]
        lines += ["", "Highlighted classes: " + ", ".join(named)]
    if data:
        lines += [
            "",
            "## Evaluation data",
            "",
            "| kind | source | split | images | texts | sha256 of the list |",
        ]
        lines += ["| --- | --- | --- | --- | --- | --- |"]
        for d in data:
            cells = [d["kind"], d["source"], d["split"], d["images"], d["texts"], str(d["sha256"])[:16]]
            lines.append("| " + " | ".join(_format_metric(c) for c in cells) + " |")
    if report.get("most_confused"):
        lines += ["", "## Most confused", "", "| true | predicted | images | of the true class |"]
        lines += ["| --- | --- | --- | --- |"]
        for c in report["most_confused"]:
            cells = [c["true"], c["predicted"], c["count"], f"{100 * c['fraction']:.1f}%"]
            lines.append("| " + " | ".join(_format_metric(x) for x in cells) + " |")
    for key, caption in (("loss", "Training curves"), ("confusion", "Confusion matrix")):
        if key in written:
            lines += ["", f"## {caption}", "", f"![{caption}]({written[key].name})"]
    markdown = "\n".join(lines) + "\n"
    write_atomic(written["markdown"], markdown)

    text = _dumps_report(report)
    write_atomic(written["json"], text)
    return written
