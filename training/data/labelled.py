"""Labelled image sets for zero-shot evaluation: an image folder per class, or a CSV/JSONL of image and label.

``root/<class>/*.jpg`` (ImageNet's layout, as torchvision's ``ImageFolder`` reads it) or a manifest with
an image column and a label column. Class names come from the folders or labels, or from a class file:
one class per line, either ``label`` or ``label<TAB>name used in prompts`` (for folders named by an id,
``n01440764<TAB>tench``); the file also fixes the class order and may list classes without images.
The set is read and checked when it is built; images are opened only when iterated.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from training.data.pairs import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: int


@dataclass(frozen=True)
class ClassList:
    labels: list[str]  # as written in folders or the label column
    names: list[str]  # as put into prompts


def read_class_file(path: Path) -> ClassList:
    """Parse a class file (``label`` or ``label<TAB>prompt name`` per line; ``#`` comments)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"class file {path} does not exist: check evaluation.classes / --classes") from None
    labels, names = [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        label, _, name = (part.strip() for part in line.partition("\t"))
        if label in labels:
            raise DataError(f"class file {path} line {number}: class {label!r} is listed twice")
        labels.append(label)
        names.append(name or label)
    if not labels:
        raise DataError(f"class file {path} lists no classes: one class per line")
    return ClassList(labels, names)


def _read_folder(source: Path) -> list[tuple[Path, str]]:
    rows = []
    for folder in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        rows += [(path, folder.name) for path in images]
    if not rows and any(p.suffix.lower() in IMAGE_SUFFIXES for p in source.iterdir()):
        raise DataError(
            f"evaluation set {source} holds images but no class folders: "
            "put each class's images in a folder named after the class (root/<class>/*.jpg)"
        )
    return rows


def _manifest_rows(source: Path) -> list[tuple[str, object]]:
    """``(where, row)`` of a CSV (with header) or JSON Lines file."""
    suffix = source.suffix.lower()
    text = source.read_text(encoding="utf-8-sig")
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        return [(f"line {reader.line_num}", row) for row in reader]
    if suffix not in (".jsonl", ".json"):
        raise DataError(
            f"evaluation set {source} has suffix {suffix!r}: give a folder, or a .csv/.jsonl file"
        )
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append((f"line {number}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(f"evaluation set {source} line {number}: bad JSON ({exc.msg})") from None
    return rows


def _read_manifest(source: Path, image_key: str, label_key: str) -> list[tuple[Path, str]]:
    rows = []
    for where, row in _manifest_rows(source):
        image, label = (row.get(image_key), row.get(label_key)) if isinstance(row, dict) else (None, None)
        if not (isinstance(image, str) and image.strip() and isinstance(label, str) and label.strip()):
            raise DataError(
                f"evaluation set {source} {where}: needs a non-empty {image_key!r} and {label_key!r} "
                "(set evaluation.image_key / evaluation.label_key to the names used)"
            )
        path = Path(image)
        rows.append((path if path.is_absolute() else source.parent / path, label.strip()))
    return rows


@dataclass(frozen=True)
class LabelledSet:
    """A labelled evaluation set: ``items`` (image path, class index) over ``classes``."""

    source: Path
    classes: ClassList
    items: list[LabelledImage]

    @classmethod
    def read(
        cls,
        source: Path | str,
        classes: Path | None = None,
        image_key: str = "image",
        label_key: str = "label",
    ) -> LabelledSet:
        """Read an image folder per class or a CSV/JSONL (image paths relative to the file's folder)."""
        source = Path(source)
        if source.is_dir():
            rows = _read_folder(source)
        elif source.is_file():
            rows = _read_manifest(source, image_key, label_key)
        else:
            raise DataError(
                f"evaluation set {source} does not exist: give an image folder per class "
                "(root/<class>/*.jpg) or a CSV/JSONL with image and label columns"
            )
        if not rows:
            raise DataError(
                f"evaluation set {source} holds no images (looked for {', '.join(IMAGE_SUFFIXES)})"
            )
        found = sorted({label for _, label in rows})
        class_list = read_class_file(classes) if classes is not None else ClassList(found, found)
        index = {label: i for i, label in enumerate(class_list.labels)}
        unknown = [label for label in found if label not in index]
        if unknown:
            raise DataError(
                f"evaluation set {source} has labels missing from class file {classes}: "
                f"{', '.join(map(repr, unknown[:5]))}: add them to the class file"
            )
        return cls(source, class_list, [LabelledImage(path, index[label]) for path, label in rows])

    def __len__(self) -> int:
        return len(self.items)

    @property
    def class_names(self) -> list[str]:
        return self.classes.names

    @property
    def labels(self) -> list[int]:
        return [item.label for item in self.items]

    def limit(self, count: int) -> LabelledSet:
        """An evenly spaced subset of ``count`` images (every class keeps its share); 0 means all."""
        if not count or count >= len(self.items):
            return self
        step = len(self.items) / count
        return LabelledSet(self.source, self.classes, [self.items[int(i * step)] for i in range(count)])

    def images(self) -> Iterator[Image.Image]:
        """The images, decoded to RGB, in ``items`` order; a bad file is an error that names it."""
        for item in self.items:
            try:
                with Image.open(item.path) as image:
                    yield image.convert("RGB")
            except (OSError, ValueError, SyntaxError) as exc:
                raise DataError(
                    f"evaluation image {item.path} cannot be read ({exc}): fix or remove it"
                ) from None

    def sha256(self) -> str:
        """sha256 of the list: every image path (relative to the set) and class label, in order."""
        digest = hashlib.sha256(b"labelled-set-v1\n")
        base = self.source if self.source.is_dir() else self.source.parent
        for item in self.items:
            try:
                name = item.path.relative_to(base).as_posix()
            except ValueError:
                name = item.path.as_posix()
            digest.update(f"{name}\t{self.classes.labels[item.label]}\n".encode())
        return digest.hexdigest()
