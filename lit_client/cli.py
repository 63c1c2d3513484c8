"""``lit``: classify image files and folders, list the served models and manage label sets, against a LiT
gateway (``--model`` picks one of its models; without it the gateway's default model answers).

Exit codes: 0 everything succeeded; 1 an image or a call failed (a summary goes to stderr); 2 usage error.
Results go to stdout (a table, JSON Lines or CSV); the progress bar and the summary go to stderr.
"""

from __future__ import annotations

import asyncio
import csv
import json
import sys
from collections import deque
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from lit_client.client import DEFAULT_URL, AsyncLitClient, LitClient
from lit_client.results import ClassifyResult, LitError, ModelInfo

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
# Errors that every other image would get too: stop sending instead of failing each one.
FATAL_STATUSES = frozenset({None, 401, 404})
SHOWN_ERRORS = 5

app = typer.Typer(
    help="Zero-shot image classification with a LiT gateway (HTTP API v1).",
    no_args_is_help=True,
    add_completion=False,
)
label_sets_app = typer.Typer(help="Create, list and delete label sets.", no_args_is_help=True)
app.add_typer(label_sets_app, name="label-sets")
stderr = Console(stderr=True, soft_wrap=True)


class Format(StrEnum):
    table = "table"
    jsonl = "jsonl"
    csv = "csv"


Url = Annotated[str, typer.Option("--url", envvar="LIT_URL", help="The gateway's base URL.")]
ApiKey = Annotated[
    str | None, typer.Option("--api-key", envvar="LIT_API_KEY", help="API key, if the gateway needs one.")
]
FormatOption = Annotated[Format, typer.Option("--format", "-f", help="Output on stdout.")]
LabelsOption = Annotated[
    str | None, typer.Option("--labels", help="Comma-separated labels: 'cat,dog,red car'.")
]
LabelOption = Annotated[
    list[str] | None, typer.Option("--label", "-l", help="One label (repeat it; may contain commas).")
]
TemplateOption = Annotated[
    list[str] | None, typer.Option("--template", "-t", help="Prompt template with {} (repeat it).")
]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model", "-m", help="The model to use (see `lit models`); default: the gateway's default."
    ),
]


class Output:
    """Records to stdout: JSON Lines and CSV as they come, a table at the end."""

    def __init__(self, fmt: Format, columns: list[str]) -> None:
        self.fmt, self.columns = fmt, columns
        self.rows: list[list[str]] = []
        if fmt is Format.csv:
            self.csv = csv.writer(sys.stdout, lineterminator="\n")
            self.csv.writerow(columns)

    def write(self, record: dict[str, Any], flat: list[dict[str, Any]]) -> None:
        """``record`` for JSON Lines; ``flat`` (rows with ``columns``) for CSV and the table."""
        if self.fmt is Format.jsonl:
            print(json.dumps(record, ensure_ascii=False), flush=True)
        elif self.fmt is Format.csv:
            for row in flat:
                self.csv.writerow(["" if row.get(c) is None else row[c] for c in self.columns])
            sys.stdout.flush()
        else:
            self.rows += [[cell(row.get(c)) for c in self.columns] for row in flat]

    def close(self) -> None:
        """Print the table, without the columns that are empty in every row (``error``, mostly)."""
        if self.fmt is Format.table:
            every = range(len(self.columns))
            shown = [i for i in every if any(row[i] for row in self.rows)] or every
            table = Table(*[self.columns[i] for i in shown])
            for row in self.rows:
                table.add_row(*[row[i] for i in shown])
            Console(width=None if sys.stdout.isatty() else 200).print(table)


def cell(value: Any) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def error_record(error: LitError) -> dict[str, Any]:
    return {"status": error.status, "code": error.code, "message": error.message}


def records(path: Path, outcome: ClassifyResult | LitError) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One image's JSON Lines record, and its rows (one per prediction) for CSV and the table."""
    image = str(path)
    if isinstance(outcome, LitError):
        return {"path": image, "error": error_record(outcome)}, [{"image": image, "error": outcome.code}]
    predictions = [asdict(p) for p in outcome.results[0].predictions]
    record = {"path": image, "model": asdict(outcome.model), "predictions": predictions}
    return record, [{"image": image, "rank": i, **p} for i, p in enumerate(predictions, 1)]


def fail(error: LitError) -> typer.Exit:
    stderr.print(f"error: {error}", markup=False, highlight=False)
    return typer.Exit(1)


def find_images(paths: list[Path]) -> list[Path]:
    """Files as given; folders searched recursively for image files (by extension), in sorted order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        else:
            found.append(path)
    return found


def label_list(labels: str | None, label: list[str] | None, from_file: Path | None = None) -> list[str]:
    chosen = [s.strip() for s in (labels or "").split(",") if s.strip()] + list(label or [])
    if from_file is not None:
        chosen += [s.strip() for s in from_file.read_text(encoding="utf-8").splitlines() if s.strip()]
    return chosen


@dataclass
class Run:
    """What ``classify`` sends and what came back."""

    ok: int = 0
    failed: int = 0
    skipped: int = 0
    stopped_by: LitError | None = None
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.ok} ok, {self.failed} failed"
        if self.stopped_by is not None and self.skipped:
            text += f", {self.skipped} not sent (stopped after {self.stopped_by.code})"
        return "\n".join([text, *self.errors[:SHOWN_ERRORS]])


async def classify_all(
    images: list[Path], client: AsyncLitClient, output: Output, concurrency: int, options: dict[str, Any]
) -> Run:
    run = Run()
    gate = asyncio.Semaphore(concurrency)
    progress = Progress(
        TextColumn("classify"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=stderr
    )
    task = progress.add_task("classify", total=len(images))

    async def one(path: Path) -> ClassifyResult | LitError | None:
        async with gate:
            if run.stopped_by is not None:
                return None
            try:
                return await client.classify(path, **options)
            except LitError as exc:
                if exc.status in FATAL_STATUSES and run.stopped_by is None:
                    run.stopped_by = exc
                return exc
            except OSError as exc:
                return LitError(None, "unreadable_file", str(exc))
            finally:
                progress.advance(task)

    def report(path: Path, outcome: ClassifyResult | LitError | None) -> None:
        if outcome is None:
            run.skipped += 1
            return
        if isinstance(outcome, LitError):
            run.failed += 1
            run.errors.append(f"  {path}: {outcome}")
        else:
            run.ok += 1
        output.write(*records(path, outcome))

    # Results come out in input order; a window of started tasks keeps `concurrency` requests busy while
    # the oldest one is awaited, without a task per image of a large folder.
    with progress:
        window: deque[tuple[Path, asyncio.Future[ClassifyResult | LitError | None]]] = deque()
        for path in images:
            window.append((path, asyncio.ensure_future(one(path))))
            if len(window) >= 4 * concurrency:
                oldest, future = window.popleft()
                report(oldest, await future)
        for path, future in window:
            report(path, await future)
    return run


@app.command()
def classify(
    paths: Annotated[
        list[Path], typer.Argument(exists=True, help="Image files, or folders (searched recursively).")
    ],
    labels: LabelsOption = None,
    label: LabelOption = None,
    label_set: Annotated[str | None, typer.Option("--label-set", help="A registered label set.")] = None,
    template: TemplateOption = None,
    top_k: Annotated[int | None, typer.Option("--top-k", "-k", min=1, help="Keep the k best labels.")] = None,
    model: ModelOption = None,
    fmt: FormatOption = Format.table,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, max=64, help="Requests at once.")
    ] = 4,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    timeout: Annotated[float, typer.Option(help="Seconds per request.")] = 60.0,
) -> None:
    """Classify images (one request each) against --labels/--label or a --label-set.

    Exit code 1 if any image failed; the summary on stderr names the first errors and their codes.
    """
    chosen = label_list(labels, label)
    if bool(chosen) == (label_set is not None):
        raise typer.BadParameter("give --labels/--label or --label-set (one of them)")
    images = find_images(paths)
    if not images:
        raise typer.BadParameter(
            f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under the given paths"
        )
    options = {
        "labels": chosen or None,
        "label_set": label_set,
        "templates": template,
        "top_k": top_k,
        "model": model,
    }
    output = Output(fmt, ["image", "rank", "label", "score", "error"])

    async def main() -> Run:
        async with AsyncLitClient(url, api_key=api_key, timeout=timeout) as client:
            return await classify_all(images, client, output, concurrency, options)

    run = asyncio.run(main())
    output.close()
    stderr.print(run.summary(), markup=False, highlight=False)
    if run.failed or run.skipped:
        raise typer.Exit(1)


MODEL_COLUMNS = [
    "name", "version", "state", "backend", "precision", "dim", "image_size", "loss", "default", "error",
]  # fmt: skip


def model_row(info: ModelInfo, default: str) -> dict[str, Any]:
    return {
        "name": info.name, "version": info.version, "state": info.state, "backend": info.backend,
        "precision": info.precision, "dim": info.embed_dim, "image_size": info.image_size, "loss": info.loss,
        "default": "yes" if info.name == default else None, "error": info.error,
    }  # fmt: skip


@app.command("models")
def list_models(fmt: FormatOption = Format.table, url: Url = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """List the models the gateway serves.

    Name, version, state, backend, precision, embedding size (dim), image size and loss of each; the
    default (used when no --model is given) is marked. A model that is not loaded shows its state, and why
    if it failed.
    """
    try:
        with LitClient(url, api_key=api_key) as client:
            served = client.models()
    except LitError as exc:
        raise fail(exc) from None
    output = Output(fmt, MODEL_COLUMNS)
    for info in served.models:
        output.write(
            {**asdict(info), "default": info.name == served.default}, [model_row(info, served.default)]
        )
    output.close()


@label_sets_app.command("create")
def create_label_set(
    name: str,
    labels: LabelsOption = None,
    label: LabelOption = None,
    from_file: Annotated[
        Path | None, typer.Option("--from-file", exists=True, dir_okay=False, help="One label per line.")
    ] = None,
    template: TemplateOption = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="The model that encodes the labels now (others do on first use); default: "
            "the gateway's default.",
        ),
    ] = None,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Create or replace the label set NAME (label sets belong to no model: every model can use it)."""
    chosen = label_list(labels, label, from_file)
    if not chosen:
        raise typer.BadParameter("give the labels: --labels, --label or --from-file")
    try:
        with LitClient(url, api_key=api_key) as client:
            stored = client.put_label_set(name, chosen, template, model)
    except LitError as exc:
        raise fail(exc) from None
    print(f"{stored.name}: {len(stored.labels)} labels")


@label_sets_app.command("list")
def list_label_sets(fmt: FormatOption = Format.table, url: Url = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """All label sets: name, number of labels, last change."""
    try:
        with LitClient(url, api_key=api_key) as client:
            sets = client.label_sets()
    except LitError as exc:
        raise fail(exc) from None
    output = Output(fmt, ["name", "count", "updated_at"])
    for summary in sets:
        output.write(asdict(summary), [asdict(summary)])
    output.close()


@label_sets_app.command("delete")
def delete_label_set(name: str, url: Url = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """Delete the label set NAME."""
    try:
        with LitClient(url, api_key=api_key) as client:
            client.delete_label_set(name)
    except LitError as exc:
        raise fail(exc) from None
    print(f"deleted {name}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
