"""What the ``lit-train`` commands share: the Typer app, the console, error exits and common options."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from lit_bundle.triton import TritonOptions

app = typer.Typer(help="Train, evaluate and build LiT zero-shot models.", no_args_is_help=True)
console = Console()

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file")]
Overrides = Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. optim.lr=3e-4")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")]


def fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(2)


def metrics_table(title: str, metrics: dict) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{100 * value:.1f}%" if isinstance(value, float) and value <= 1 else str(value))
    return table


EvalSet = Annotated[
    str | None,
    typer.Option(
        "--eval-set",
        help="zero-shot set: an image folder per class (root/<class>/*.jpg) or a CSV/JSONL of image,label",
    ),
]
Classes = Annotated[
    Path | None, typer.Option(help="class file: one class per line, 'label' or 'label<TAB>prompt name'")
]
RetrievalSet = Annotated[
    str | None,
    typer.Option(
        "--retrieval-set",
        help="image-text pairs to retrieve among: a CSV/JSONL manifest, shards-{000..009}.tar or a shard "
        "list (default: the training data's held-out split)",
    ),
]


Repository = Annotated[Path, typer.Option("--repository", "-r", help="Triton model repository folder")]
_REGENERATE = (
    "Giving this, --tensorrt or --triton-precision regenerates both config.pbtxt from default settings plus "
    "these; without any, promotion keeps the existing configs' settings and changes only the served version."
)
InstanceKind = Annotated[
    str | None,
    typer.Option(help=f"where Triton runs the encoders: gpu, or cpu for a host without one. {_REGENERATE}"),
]
TensorRT = Annotated[
    bool | None,
    typer.Option(
        help="Triton's TensorRT accelerator (fp16, engine cache). Giving --tensorrt or --no-tensorrt "
        "regenerates both config.pbtxt (on gpu instances unless --instance-kind says otherwise)."
    ),
]

TritonPrecision = Annotated[
    str | None,
    typer.Option(
        "--triton-precision",
        help="which file Triton's ONNX Runtime backend loads: fp32 (model.onnx) or int8 (the version's gated "
        "int8 variant, model.int8.onnx; CPU instances, the default with it). Regenerates both config.pbtxt.",
    ),
]


def triton_options(
    instance_kind: str | None = None, tensorrt: bool | None = None, precision: str | None = None
) -> TritonOptions | None:
    """Options to regenerate the Triton configs from, or None (none given: keep the configs' settings).
    ``precision`` int8 puts the encoders on CPU instances unless ``instance_kind`` says otherwise."""
    from pydantic import ValidationError

    from lit_bundle.triton import TritonOptions

    if instance_kind is None and tensorrt is None and precision is None:
        return None
    kind = instance_kind or ("cpu" if precision == "int8" else "gpu")
    try:
        return TritonOptions.model_validate(
            {"instance_kind": kind, "tensorrt": bool(tensorrt), "precision": precision or "fp32"}
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(map(str, error["loc"]))
        raise fail(f"bad Triton options: {where + ': ' if where else ''}{error['msg']}") from None


Fp16 = Annotated[bool, typer.Option(help="also convert to float16 (for GPUs; looser check tolerance)")]
Precisions = Annotated[
    list[str] | None,
    typer.Option(
        "--precision",
        help="also make this lower-precision variant for CPUs (int8), published only if it passes its "
        "accuracy gate against fp32 on held-out labelled images; repeat for several",
    ),
]
CalibrationImages = Annotated[
    Path | None,
    typer.Option(help="a folder of images to calibrate int8 on (default: the training data)"),
]
Activate = Annotated[
    bool | None, typer.Option(help="serve the new version at once (default: only if none is active)")
]
