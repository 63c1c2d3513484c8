"""``lit-train`` commands on bundles: export, import, variants, promote, prune and verify."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lit_bundle.manifest import Manifest, VariantPrecision, variant
from training.cli_common import (
    Activate,
    CalibrationImages,
    Classes,
    EvalSet,
    Fp16,
    InstanceKind,
    Precisions,
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


@app.command("export")
def export_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="a checkpoint folder (step-0001200) or a run folder")],
    name: Annotated[str, typer.Option(help="bundle name (Triton models <name>_image, <name>_text)")] = "lit",
    repository: Repository = Path("model_repository"),
    eval_set: EvalSet = None,
    classes: Classes = None,
    retrieval_set: RetrievalSet = None,
    check_images: Annotated[
        Path | None,
        typer.Option(
            help="a folder of images to check ONNX against torch on (default: the evaluation images)"
        ),
    ] = None,
    fp16: Fp16 = False,
    precision: Precisions = None,
    calibration_images: CalibrationImages = None,
    activate: Activate = None,
) -> None:
    """Export a checkpoint to ONNX, verify it against torch, and publish it as the next version.

    The checkpoint is evaluated first (on --eval-set / --retrieval-set, the config's evaluation sets or
    the training data's held-out split); the metrics and the data they came from go into the manifest.
    --precision int8 adds an int8 variant when it passes its gate on the zero-shot evaluation set."""
    from training.checkpoint import latest_checkpoint
    from training.data.pairs import DataError
    from training.export import ExportError, export_bundle
    from training.export_checkpoint import request_from_checkpoint

    folder = latest_checkpoint(checkpoint) or checkpoint
    try:
        request = request_from_checkpoint(
            folder,
            name,
            zero_shot=eval_set,
            classes=classes,
            retrieval=retrieval_set,
            check_images=check_images,
            precisions=variant_precisions(precision),
            calibration=calibration_images,
        )
        manifest = export_bundle(request, repository, fp16=fp16, activate=activate)
    except (DataError, ExportError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    console.print(f"exported {manifest.name} v{manifest.version} to {repository}")
    console.print(metrics_table("manifest metrics", manifest.metrics))
    print_variants(manifest, variant_precisions(precision))


@app.command("import-hf")
def import_hf_cmd(
    source: Annotated[
        str, typer.Argument(help="a Hugging Face CLIP or SigLIP model: hub name or local folder")
    ],
    name: Annotated[str, typer.Option(help="bundle name")],
    repository: Repository = Path("model_repository"),
    fp16: Fp16 = False,
) -> None:
    """Import a Hugging Face CLIPModel or SiglipModel as a bundle (scores match transformers)."""
    from training.export import ExportError
    from training.importers import import_hf

    try:
        manifest = import_hf(source, repository, name, fp16=fp16)
    except (ExportError, OSError, ValueError) as exc:
        raise fail(str(exc)) from None
    console.print(f"imported {source} as {manifest.name} v{manifest.version} into {repository}")


@app.command("import-lit")
def import_lit_cmd(
    checkpoint: Annotated[
        Path, typer.Argument(help="a published LiT checkpoint, e.g. LiT-B16B.npz (or a tree of its layout)")
    ],
    tokenizer: Annotated[
        Path,
        typer.Option(help="the vocabulary published beside it: LiT-B16B.txt (WordPiece) or LiT-L16S.model"),
    ],
    name: Annotated[str, typer.Option(help="bundle name")],
    repository: Repository = Path("model_repository"),
    text_heads: Annotated[
        int | None,
        typer.Option(help="attention heads of a BERT text tower (default: its width / 64, as published)"),
    ] = None,
    fp16: Fp16 = False,
    activate: Activate = None,
) -> None:
    """Import a LiT checkpoint of Google's (image ViT; BERT or ViT-style text tower) as a bundle."""
    from training.export import ExportError
    from training.import_lit import import_lit

    try:
        manifest = import_lit(
            checkpoint, tokenizer, repository, name, text_heads=text_heads, fp16=fp16, activate=activate
        )
    except (ExportError, OSError, ValueError) as exc:
        raise fail(str(exc)) from None
    console.print(f"imported {checkpoint.name} as {manifest.name} v{manifest.version} into {repository}")


def variant_precisions(given: list[str] | None) -> list[VariantPrecision]:
    """The --precision values, checked: int8 (bf16 variants are not made yet)."""
    for value in given or []:
        if value != "int8":
            raise fail(f"--precision {value!r}: the variants made today are int8 (bf16 is not supported yet)")
    return ["int8" for _ in dict.fromkeys(given or [])]


def print_variants(manifest: Manifest, asked: list[VariantPrecision]) -> None:
    """The gate figures of each variant asked for, or what it missed by when it was not published."""
    from lit_bundle.gate import gate_summary

    for precision in asked:
        found = variant(manifest, precision)
        if found is not None:
            console.print(f"[green]{precision} variant published[/]: {gate_summary(found.gate)}")
            continue
        missed = [f"  {key}: {value}" for key, value in manifest.provenance.items() if precision in key]
        console.print(
            f"[bold red]{precision} variant NOT published[/] (missed its gate):\n" + "\n".join(missed)
        )


@app.command("add-variant")
def add_variant_cmd(
    name: Annotated[str, typer.Argument(help="bundle name")],
    precision: Precisions = None,
    version: Annotated[int | None, typer.Option(help="source version (default: the active one)")] = None,
    repository: Repository = Path("model_repository"),
    eval_set: EvalSet = None,
    classes: Classes = None,
    calibration_images: CalibrationImages = None,
    activate: Activate = None,
) -> None:
    """Publish a bundle again as a new version with a lower-precision variant (imported models too).

    The variant is gated on --eval-set (or, for a model trained on the synthetic world, its evaluation
    split) and calibrated on --calibration-images (or the training data its provenance names). The new
    version is made active when the source version was (see --activate)."""
    from lit_bundle.manifest import BundleError
    from training.add_variants import add_variants
    from training.data.pairs import DataError

    asked = variant_precisions(precision or ["int8"])
    try:
        manifest = add_variants(
            repository,
            asked,
            name,
            version,
            eval_set=Path(eval_set) if eval_set else None,
            classes=classes,
            calibration=calibration_images,
            activate=activate,
        )
    except (BundleError, DataError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    console.print(f"published {manifest.name} v{manifest.version} in {repository}")
    print_variants(manifest, asked)


@app.command("promote")
def promote_cmd(
    name: Annotated[str, typer.Argument(help="bundle name")],
    version: Annotated[int, typer.Argument(help="version to serve")],
    repository: Repository = Path("model_repository"),
    instance_kind: InstanceKind = None,
    tensorrt: TensorRT = None,
    triton_precision: TritonPrecision = None,
) -> None:
    """Make a verified version the active one for Triton and the gateway (keeping the configs' settings)."""

    from lit_bundle.manifest import BundleError
    from lit_bundle.repository import promote

    options = triton_options(instance_kind, tensorrt, triton_precision)
    try:
        promote(repository, name, version, options)
    except BundleError as exc:
        raise fail(str(exc)) from None
    console.print(f"{name} v{version} is now active in {repository}")


@app.command("prune")
def prune_cmd(
    name: Annotated[str, typer.Argument(help="bundle name")],
    keep: Annotated[int, typer.Option(help="newest versions to keep (the active one is always kept)")] = 2,
    repository: Repository = Path("model_repository"),
) -> None:
    """Delete old versions of a bundle, keeping the newest ones and the active one."""
    from lit_bundle.repository import prune

    removed = prune(repository, name, keep)
    console.print(f"removed versions {removed or 'none'} of {name}")


@app.command("verify")
def verify_cmd(
    repository: Annotated[Path, typer.Argument(help="Triton model repository folder")] = Path(
        "model_repository"
    ),
    name: Annotated[str | None, typer.Option(help="bundle name (default: the only one)")] = None,
    version: Annotated[int | None, typer.Option(help="version (default: the active one)")] = None,
) -> None:
    """Check a bundle: manifest schema, every file's sha256, ONNX tensors and Triton configs."""
    from lit_bundle.manifest import BundleError
    from lit_bundle.repository import CONFIG_FILE, load_bundle
    from lit_bundle.signature import check_signature
    from lit_bundle.triton import check_config

    try:
        bundle = load_bundle(repository, name, version)
        for encoder in (bundle.manifest.image_encoder, bundle.manifest.text_encoder):
            check_signature(bundle.path(encoder.file), encoder)
            check_config((repository / encoder.triton_name / CONFIG_FILE).read_text(), encoder)
    except (BundleError, ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    m = bundle.manifest
    console.print(f"[green]ok[/]: {m.name} v{m.version} ({m.loss}, dim {m.embed_dim}, {m.preprocess.size}px)")
