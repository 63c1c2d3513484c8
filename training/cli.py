"""``lit-train``: pretrain-tower, train, evaluate, demo, ablation and retrain (the bundle commands are in
:mod:`training.cli_bundle`).

Every command takes an optional YAML config plus ``key=value`` overrides (dotted keys, e.g.
``optim.lr=3e-4 model.mode=LU``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

if TYPE_CHECKING:
    pass

from training.cli_common import (
    Classes,
    ConfigOpt,
    EvalSet,
    InstanceKind,
    Overrides,
    Quiet,
    Repository,
    RetrievalSet,
    TensorRT,
    TritonPrecision,
    app,
    console,
    fail,
    metrics_table,
    triton_options,
)
from training.config import ConfigError, PretrainConfig, TrainConfig, load_config


@app.command("pretrain-tower")
def pretrain_cmd(config: ConfigOpt = None, overrides: Overrides = None, quiet: Quiet = False) -> None:
    """Pretrain the built-in image tower on synthetic shape/colour labels."""
    from training.pretrain import pretrain_tower

    try:
        cfg = load_config(PretrainConfig, config, overrides or [])
    except ConfigError as exc:
        raise fail(str(exc)) from None
    result = pretrain_tower(cfg, progress=not quiet)
    console.print(
        f"tower saved to {result.weights}: shape accuracy {100 * result.shape_accuracy:.1f}%, "
        f"colour accuracy {100 * result.colour_accuracy:.1f}%; linear probe top-1 "
        f"{100 * result.probe.top1:.1f}% (second renderer: {100 * result.probe.ood_top1:.1f}%)"
    )


@app.command("train")
def train_cmd(
    config: ConfigOpt = None,
    overrides: Overrides = None,
    resume: Annotated[
        bool, typer.Option(help="continue exactly from out_dir's latest checkpoint, if there is one")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """LiT contrastive tuning (run under torchrun for several processes)."""
    from training.data.pairs import DataError
    from training.recipes import periodic_evaluator
    from training.train import train

    try:
        cfg = load_config(TrainConfig, config, overrides or [])
    except ConfigError as exc:
        raise fail(str(exc)) from None
    try:
        result = train(cfg, resume=resume, progress=not quiet, evaluator=periodic_evaluator(cfg))
    except (DataError, ValueError, FileNotFoundError) as exc:
        raise fail(str(exc)) from None
    final = result.history[-1]["loss"] if result.history else float("nan")
    resumed = f", resumed from {result.resumed_from.name}" if result.resumed_from else ""
    console.print(
        f"checkpoint {result.checkpoint} (final loss {final:.4f}, "
        f"feature cache: {result.cache_used}{resumed})"
    )


def _is_repository(path: Path) -> bool:
    from lit_bundle.repository import bundle_names

    return bool(bundle_names(path))


@app.command("evaluate")
def evaluate_cmd(
    model: Annotated[
        Path,
        typer.Argument(help="a checkpoint folder (step-0001200), a run folder, or a model repository"),
    ],
    eval_set: EvalSet = None,
    classes: Classes = None,
    retrieval_set: RetrievalSet = None,
    templates: Annotated[str | None, typer.Option(help="imagenet80, imagenet7, demo or a file")] = None,
    name: Annotated[str | None, typer.Option(help="bundle name, for a model repository")] = None,
    version: Annotated[int | None, typer.Option(help="bundle version (default: the active one)")] = None,
    out: Annotated[Path | None, typer.Option(help="report folder (default: <model>/report)")] = None,
    size: Annotated[int | None, typer.Option(help="synthetic evaluation images")] = None,
    quiet: Quiet = False,
) -> None:
    """Zero-shot top-1/top-5 and retrieval recall of a checkpoint or an exported bundle, with a report.

    On the user's data: a labelled set (--eval-set) and image-text pairs (--retrieval-set, else the
    training data's held-out split). A checkpoint trained on the synthetic world without such sets is
    scored on that world's held-out combinations. A bundle is scored through its ONNX files, as served."""
    from lit_bundle.manifest import BundleError
    from training.data.pairs import DataError
    from training.templates import load_templates
    from training.user_eval import EvaluationError, EvaluationSets, evaluate_sets
    from training.zero_shot import report

    named = eval_set or retrieval_set
    try:
        if _is_repository(model):
            from lit_bundle.repository import load_bundle
            from training.encoders import BundleEncoders

            bundle = load_bundle(model, name, version)
            chosen = load_templates(templates) if templates else list(bundle.manifest.templates)
            sets = EvaluationSets.for_config(None, chosen, eval_set, classes, retrieval_set)
            encoders = BundleEncoders(bundle)
            title = f"Zero-shot evaluation of {bundle.manifest.name} v{bundle.manifest.version}"
            folder = out or model / "reports" / f"{bundle.manifest.name}-v{bundle.manifest.version}"
        else:
            from training.checkpoint import latest_checkpoint
            from training.encoders import TorchEncoders
            from training.factory import load_trained

            checkpoint = latest_checkpoint(model) or model
            trained, cfg = load_trained(checkpoint)
            chosen = load_templates(templates or cfg.templates)
            title = f"Zero-shot evaluation of {checkpoint}"
            folder = out or checkpoint / "report"
            if cfg.data.kind == "synthetic" and not (named or cfg.evaluation.zero_shot):
                from training.sources import world_for
                from training.zero_shot import evaluate_synthetic

                world, count = world_for(cfg.data), size or cfg.data.synthetic.eval_size
                evaluation = evaluate_synthetic(trained, world, count, chosen, progress=not quiet)
                paths = report(evaluation, folder, title)
                console.print(metrics_table("zero-shot evaluation", evaluation.metrics))
                console.print(f"report: {paths['markdown']}")
                return
            sets = EvaluationSets.for_config(cfg, chosen, eval_set, classes, retrieval_set)
            encoders = TorchEncoders(trained)
        evaluation = evaluate_sets(encoders, sets.require("evaluate"), progress=not quiet)
    except (BundleError, DataError, EvaluationError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    paths = report(evaluation, folder, title)
    console.print(metrics_table("evaluation", evaluation.metrics))
    for data in evaluation.data:
        console.print(f"{data.kind}: {data.source} ({data.split}, {data.images} images, {data.texts} texts)")
    console.print(f"report: {paths['markdown']}")


@app.command("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option(help="output folder")] = Path("runs/demo"),
    overrides: Overrides = None,
    export: Annotated[
        Path | None, typer.Option(help="then export it into this model repository and make it active")
    ] = None,
    name: Annotated[str, typer.Option(help="bundle name when exporting")] = "lit_demo",
    quiet: Quiet = False,
) -> None:
    """Build the demo model from nothing: tower pretraining, LiT tuning, held-out evaluation."""
    from training.export import export_bundle
    from training.export_checkpoint import request_from_checkpoint
    from training.recipes import build_demo

    try:
        summary = build_demo(out, overrides or [], progress=not quiet)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    console.print(metrics_table("demo model", summary.evaluation.metrics))
    console.print(f"checkpoint: {summary.checkpoint}\nreport: {Path(out) / 'lit' / 'report' / 'report.md'}")
    if export is not None:
        request = request_from_checkpoint(summary.checkpoint, name, progress=not quiet)
        manifest = export_bundle(request, export, activate=True)
        console.print(f"exported {manifest.name} v{manifest.version} to {export} (active)")


@app.command("ablation")
def ablation_cmd(
    out: Annotated[Path, typer.Option(help="output folder")] = Path("runs/ablation"),
    row: Annotated[
        list[str] | None,
        typer.Option(help="a row to run (repeat; default all): Lu, LU, Uu, uu, 'Lu sigmoid'"),
    ] = None,
    seeds: Annotated[int, typer.Option(help="runs per row, seeds 0..N-1")] = 3,
    overrides: Overrides = None,
    quiet: Quiet = False,
) -> None:
    """The paper's ablation on the synthetic world: Lu, LU (MiniLM), Uu, uu and sigmoid at equal steps."""
    from training.ablation import ABLATION_ROWS, run_ablation, summarise

    try:
        results = run_ablation(
            out, rows=row or tuple(ABLATION_ROWS), seeds=seeds, overrides=overrides or [], progress=not quiet
        )
    except (ConfigError, ValueError) as exc:
        raise fail(str(exc)) from None
    table = Table(title=f"LiT ablation (synthetic world, equal steps, {seeds} seed(s): mean ± sd)")
    for column in ("row", "held-out top-1", "seen top-1", "second renderer", "tuning time (s)"):
        table.add_column(column)
    for entry in summarise(results):
        cells = [
            f"{100 * entry[k]:.1f} ± {100 * entry[k + '_std']:.1f}%"
            for k in ("heldout_top1", "seen_top1", "ood_top1")
        ]
        table.add_row(entry["row"], *cells, f"{entry['train_seconds']:.0f}")
    console.print(table)
    console.print(f"written: {Path(out) / 'ablation.md'}, ablation.json, ablation.png")


@app.command("retrain")
def retrain_cmd(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="LiT YAML config (default: the demo's; for --dry-run retrain_dryrun.yaml)"
        ),
    ] = None,
    overrides: Overrides = None,
    repository: Repository = Path("model_repository"),
    name: Annotated[str, typer.Option(help="bundle to retrain (a dry run uses <name>_dryrun)")] = "lit_demo",
    eval_set: EvalSet = None,
    classes: Classes = None,
    retrieval_set: RetrievalSet = None,
    gate_metric: Annotated[
        str | None,
        typer.Option(
            help="top1 (zero-shot, the default with --eval-set), top5, i2t_r1 (the default with only "
            "--retrieval-set), t2i_r1, i2t_r5, t2i_r5; heldout_top1 on the synthetic world"
        ),
    ] = None,
    min_accuracy: Annotated[
        float, typer.Option(min=0.0, help="fail below this value of the gated metric (0-1)")
    ] = 0.8,
    max_regression: Annotated[
        float, typer.Option(min=0.0, help="fail if the active version's gated metric is higher by more")
    ] = 0.01,
    out: Annotated[
        Path | None,
        typer.Option(help="a new run folder (default: runs/retrain/<time>; for --dry-run a temporary one)"),
    ] = None,
    report_dir: Annotated[Path | None, typer.Option(help="report folder (default: <out>/report)")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="small run on a temporary copy of the repository")
    ] = False,
    instance_kind: InstanceKind = None,
    tensorrt: TensorRT = None,
    triton_precision: TritonPrecision = None,
    quiet: Quiet = False,
) -> None:
    """Train, evaluate, gate, export and promote: the CI retraining chain (exit 1: gate failed).

    On your own data (data.kind manifest or webdataset) the gate scores the candidate and the active
    version on the evaluation set you name (--eval-set or --retrieval-set)."""

    from training.data.pairs import DataError
    from training.export import ExportError
    from training.retrain import GateData, RetrainOptions, retrain

    triton = triton_options(instance_kind, tensorrt, triton_precision)
    if triton is not None and triton.precision != "fp32":
        raise fail(
            f"--triton-precision {triton.precision}: retraining publishes a version without lower-precision "
            f"variants; retrain with --triton-precision fp32, then `lit-train add-variant {name} --precision "
            f"{triton.precision}` and promote its version with --triton-precision {triton.precision}"
        )
    try:
        gate = GateData(eval_set=eval_set, classes=classes, retrieval_set=retrieval_set, metric=gate_metric)
        options = RetrainOptions(
            repository=repository,
            name=name,
            config=config,
            overrides=overrides or (),
            gate=gate,
            min_accuracy=min_accuracy,
            max_regression=max_regression,
            out=out,
            report_dir=report_dir,
            dry_run=dry_run,
            progress=not quiet,
        )
        result = retrain(options, triton=triton)
    except (DataError, ExportError, ValueError, OSError) as exc:  # config, bundle and retrain errors too
        raise fail(str(exc)) from None
    table = Table(title=f"retraining gate ({'dry run, ' if dry_run else ''}{result.bundle})")
    for column in ("check", "result", "detail"):
        table.add_column(column)
    for check in result.checks:
        table.add_row(check.name, "[green]pass[/]" if check.passed else "[red]FAIL[/]", check.detail)
    console.print(table)
    console.print(f"report: {result.report['markdown']}")
    if not result.passed:
        console.print(f"[bold red]gate failed[/]: nothing promoted in {result.repository}")
        raise typer.Exit(1)
    console.print(
        f"{result.bundle} v{result.new_version} is now active in {result.repository} "
        f"({result.timings['total']:.0f} s)"
    )


# registers the bundle commands and ood-set / ood-eval (the second renderer's set), listed after these
from training import cli_bundle, cli_ood  # noqa: E402, F401
