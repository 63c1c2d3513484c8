"""``lit-train ood-set`` and ``ood-eval``: the second renderer's out-of-distribution set, written as a
labelled folder or scored in memory over several seeds."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from training.cli_common import Quiet, app, console, fail

if TYPE_CHECKING:
    from training.encoders import Encoders

PerClass = Annotated[int, typer.Option(min=1, help="images per class (64 classes, half light, half dark)")]
Size = Annotated[int, typer.Option(min=16, help="image side in pixels (the model resizes)")]
# second_renderer.DEFAULT_SIZE; not imported here, so that matplotlib and torch load only when a command runs
DEFAULT_SIZE = 128


@app.command("ood-set")
def ood_set_cmd(
    out: Annotated[Path, typer.Argument(help="a new folder: <out>/<class text>/<index>-<light|dark>.png")],
    per_class: PerClass = 20,
    seed: Annotated[int, typer.Option(min=0, help="set seed (another seed, other images)")] = 0,
    size: Size = DEFAULT_SIZE,
    sheet: Annotated[Path | None, typer.Option(help="also write a contact sheet of 24 examples")] = None,
) -> None:
    """Write the out-of-distribution set drawn by a second, independent renderer (matplotlib, light and
    dark backgrounds), as an image folder per class for `lit-train evaluate MODEL --eval-set OUT`."""
    from training.data.second_renderer import write_set

    try:
        count = write_set(out, per_class, seed, size)
    except (FileExistsError, ValueError) as exc:
        raise fail(str(exc)) from None
    console.print(f"wrote {count} images, {count // per_class} classes, to {out}")
    if sheet is not None:
        _contact_sheet(seed, size, sheet)
        console.print(f"contact sheet: {sheet}")
    console.print(f"score it: lit-train evaluate MODEL --eval-set '{out}'")


@app.command("ood-eval")
def ood_eval_cmd(
    model: Annotated[
        Path, typer.Argument(help="a model repository, a checkpoint folder (step-0001200) or a run folder")
    ],
    seed: Annotated[list[int] | None, typer.Option(help="set seeds; repeat (default: 0 1 2)")] = None,
    per_class: PerClass = 20,
    size: Size = DEFAULT_SIZE,
    templates: Annotated[
        str | None, typer.Option(help="imagenet80, imagenet7, demo or a file (default: the model's)")
    ] = None,
    name: Annotated[str | None, typer.Option(help="bundle name, for a model repository")] = None,
    version: Annotated[int | None, typer.Option(help="bundle version (default: the active one)")] = None,
    quiet: Quiet = False,
) -> None:
    """Zero-shot top-1 on the out-of-distribution set, overall and on light / dark backgrounds, for each
    seed, with the mean and spread: a bundle through its ONNX files, a checkpoint through torch."""
    from lit_bundle.manifest import BundleError
    from lit_bundle.repository import bundle_names
    from training.ood_eval import KEYS, ood_top1, summarise
    from training.templates import load_templates

    seeds = seed or [0, 1, 2]
    encoders: Encoders
    try:
        if bundle_names(model):
            from lit_bundle.repository import load_bundle
            from training.encoders import BundleEncoders

            bundle = load_bundle(model, name, version)
            chosen = load_templates(templates) if templates else list(bundle.manifest.templates)
            encoders = BundleEncoders(bundle)
            what = f"{bundle.manifest.name} v{bundle.manifest.version}"
        else:
            from training.checkpoint import latest_checkpoint
            from training.encoders import TorchEncoders
            from training.factory import load_trained

            checkpoint = latest_checkpoint(model) or model
            trained, cfg = load_trained(checkpoint)
            chosen = load_templates(templates or cfg.templates)
            encoders = TorchEncoders(trained)
            what = str(checkpoint)
        runs = [ood_top1(encoders, chosen, per_class, s, size, progress=not quiet) for s in seeds]
    except (BundleError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    table = Table(title=f"out-of-distribution top-1 of {what} ({64 * per_class} images a seed, {size} px)")
    for column in ("seed", "all", "light backgrounds", "dark backgrounds"):
        table.add_column(column, justify="right")
    for s, run in zip(seeds, runs, strict=True):
        table.add_row(str(s), *(f"{100 * run[key]:.1f}%" for key in KEYS))
    summary = summarise(runs)
    cells = [summary[key] for key in KEYS]
    table.add_row("mean ± sd", *(f"{100 * c['mean']:.1f} ± {100 * c['std']:.1f}" for c in cells))
    table.add_row("min-max", *(f"{100 * c['min']:.1f}-{100 * c['max']:.1f}" for c in cells))
    console.print(table)


def _contact_sheet(seed: int, size: int, path: Path, columns: int = 6) -> None:
    """24 examples (each shape in three colours, light and dark backgrounds alternating) in one titled
    PNG, for the docs."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from training.data.second_renderer import COLOURS, SHAPES, draw_spec, render

    n = len(COLOURS)
    picks = [(s * n + (s + 3 * j) % n, s + j) for s in range(len(SHAPES)) for j in range(3)]
    # image index 0 or 1 of the class, chosen so that the background is light when s + j is even
    drawings = [draw_spec(label, (label + parity) % 2, seed) for label, parity in picks]
    rows = -(-len(drawings) // columns)
    fig = Figure(figsize=(1.6 * columns, 1.75 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax, d in zip(axes.flat, drawings, strict=False):
        ax.imshow(render(d, size))
        ax.set_title(f"{d.label}\n({'light' if d.light else 'dark'})", fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
