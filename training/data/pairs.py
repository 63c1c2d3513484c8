"""Image-text pair readers: CSV/JSONL manifests (WebDataset shards: ``training.data.webdataset``).

Both yield ``(pixels, caption)``. Bad data is either an error that names the file (and line, or shard
and sample key) and says how to fix it, or, with ``on_error="skip"``, a ``None`` item that
:func:`collate_pairs` drops and counts, so a run can report how much it skipped instead of silently
training on less.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image, UnidentifiedImageError

from lit_bundle.preprocess import PreprocessSpec, preprocess_image
from training.data.split import Split, in_split

OnError = Literal["raise", "skip"]
Transform = Callable[[Image.Image], Any]
Pair = tuple[Any, str]

SKIP_HINT = "set data.on_error=skip to skip and count bad samples"
# PIL raises OSError (incl. UnidentifiedImageError) for most bad files, but some decoders raise these.
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class DataError(RuntimeError):
    """Bad training data; the message names the file (line, or shard and key) and how to fix it.

    Takes a single message argument so it survives the DataLoader's worker-to-main re-raise.
    """


class PixelTransform:
    """PIL image -> normalised CHW float tensor; a class rather than a lambda so workers can pickle it."""

    def __init__(self, spec: PreprocessSpec) -> None:
        self.spec = spec

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(preprocess_image(image, self.spec))

    def __repr__(self) -> str:
        return f"PixelTransform({self.spec!r})"


def pixel_transform(spec: PreprocessSpec) -> PixelTransform:
    """The standard training transform: exactly the serving preprocessing, as a tensor."""
    return PixelTransform(spec)


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):  # its message only repeats the path or a BytesIO repr
        return "not a recognised image format"
    return f"{type(exc).__name__}: {exc}"


def load_image(data: Path | bytes) -> Image.Image:
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
        return image.convert("RGB")  # convert() forces a full decode inside the try of the caller


# ----------------------------------------------------------------------------------------------
# Manifests


@dataclass(frozen=True)
class _Record:
    image: str
    caption: str
    where: str  # "line 7" (or "item 7" for a JSON array), for messages


class ManifestPairs(torch.utils.data.Dataset):
    """Pairs listed in a CSV (with header) or JSON Lines manifest; ``.json`` may also be a JSON array.

    The manifest is parsed and validated at construction, so structural mistakes fail before
    training starts; images are only opened in ``__getitem__``.
    """

    def __init__(
        self,
        path: Path,
        transform: Transform | None = None,
        image_root: Path | None = None,
        image_key: str = "image",
        caption_key: str = "caption",
        on_error: OnError = "raise",
        split: Split = "all",
        holdout: float = 0.0,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.path = Path(path)
        self.transform = transform
        self.image_root = Path(image_root) if image_root is not None else self.path.parent
        self.image_key, self.caption_key, self.on_error = image_key, caption_key, on_error
        self.split, self.holdout = split, holdout
        records = self._read()
        if not records:
            raise DataError(f"manifest {self.path} lists no samples: add rows, or point data.path elsewhere")
        # The split hashes the image path as written in the manifest, so moving image_root keeps it.
        self.records = [r for r in records if in_split(r.image, split, holdout)]
        if not self.records:
            images = len({r.image for r in records})
            raise DataError(
                f"manifest {self.path} has no samples in the {split} split ({images} images, data.holdout="
                f"{holdout}): "
                + (
                    "raise data.holdout, or name a separate evaluation set"
                    if split == "heldout"
                    else "lower data.holdout"
                )
            )

    # -- parsing --------------------------------------------------------------------------------

    def _read(self) -> list[_Record]:
        suffix = self.path.suffix.lower()
        if suffix not in (".csv", ".jsonl", ".json"):
            raise DataError(f"manifest {self.path} has unknown suffix {suffix!r}: use .csv, .jsonl or .json")
        try:
            text = self.path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise DataError(f"manifest {self.path} does not exist: check data.path") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read manifest {self.path} ({exc}): it must be UTF-8 text") from exc
        if suffix == ".csv":
            return self._read_csv(text)
        if suffix == ".json" and text.lstrip().startswith("["):
            return self._read_json_array(text)
        return self._read_jsonl(text)

    def _read_csv(self, text: str) -> list[_Record]:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            header = reader.fieldnames or []
            missing = [k for k in (self.image_key, self.caption_key) if k not in header]
            if missing:
                raise DataError(
                    f"manifest {self.path} line 1: header {header} lacks column(s) {missing}: add them, or "
                    "set data.image_key / data.caption_key to the column names used"
                )
            records = []
            for row in reader:
                records.append(self._record(row, f"line {reader.line_num}"))
            return records
        except csv.Error as exc:
            raise DataError(f"manifest {self.path} line {reader.line_num}: malformed CSV ({exc})") from exc

    def _read_jsonl(self, text: str) -> list[_Record]:
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"manifest {self.path} line {number}: malformed JSON ({exc.msg} at column {exc.colno}): "
                    "each line must be one JSON object"
                ) from None
            records.append(self._record(row, f"line {number}"))
        return records

    def _read_json_array(self, text: str) -> list[_Record]:
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"manifest {self.path} line {exc.lineno}: malformed JSON ({exc.msg})") from None
        return [self._record(row, f"item {i}") for i, row in enumerate(rows)]

    def _record(self, row: Any, where: str) -> _Record:
        at = f"manifest {self.path} {where}"
        if not isinstance(row, dict):
            raise DataError(f"{at}: expected an object with keys {self.image_key!r} and {self.caption_key!r}")
        image, caption = row.get(self.image_key), row.get(self.caption_key)
        for key, value in ((self.image_key, image), (self.caption_key, caption)):
            if value is None:
                raise DataError(f"{at}: missing {key!r}: add it, or set data.image_key / data.caption_key")
            if not isinstance(value, str):
                raise DataError(f"{at}: {key!r} must be a string, got {type(value).__name__}")
            if not value.strip():
                raise DataError(f"{at}: empty {key!r}: fill it in or remove the row")
        return _Record(image=image, caption=caption.strip(), where=where)

    # -- access ---------------------------------------------------------------------------------

    def image_path(self, index: int) -> Path:
        """Where sample ``index``'s image lives (relative paths resolve against ``image_root``)."""
        path = Path(self.records[index].image)
        return path if path.is_absolute() else self.image_root / path

    def __len__(self) -> int:
        return len(self.records)

    @property
    def captions(self) -> list[str]:
        return [record.caption for record in self.records]

    def __getitem__(self, index: int) -> Pair | None:
        record, path = self.records[index], self.image_path(index)
        try:
            image = load_image(path)
        except FileNotFoundError:
            problem, detail = "missing image", ""
        except IMAGE_ERRORS as exc:
            problem, detail = "unreadable image", f" [{describe_error(exc)}]"
        else:
            return (self.transform(image) if self.transform is not None else image), record.caption
        if self.on_error == "skip":
            return None
        raise DataError(
            f"{problem} {path} (manifest {self.path} {record.where}){detail}: "
            f"fix the path or the file, or {SKIP_HINT}"
        )

    def fingerprint(self) -> str:
        """Changes when the manifest or any image changes (size/mtime stat only, no image reads)."""
        digest = hashlib.sha256(b"manifest-v1\0")
        digest.update(self.path.read_bytes())
        digest.update(f"\0{self.image_key}\0{self.caption_key}\0{self.split}\0{self.holdout!r}\0".encode())
        for index in range(len(self.records)):
            digest.update(stat_token(self.image_path(index)).encode())
        return digest.hexdigest()


def stat_token(path: Path) -> str:
    try:
        stat = path.stat()
    except OSError:
        return f"{path}\0missing\n"
    return f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n"


# ----------------------------------------------------------------------------------------------
# Batching


@dataclass
class PairBatch:
    pixels: torch.Tensor
    captions: list[str]
    skipped: int


def collate_pairs(items: list[Pair | None]) -> PairBatch:
    """Stack good pairs and count the ``None`` placeholders left by ``on_error="skip"``."""
    good = [item for item in items if item is not None]
    if not good:
        return PairBatch(pixels=torch.empty(0), captions=[], skipped=len(items))
    pixels = torch.stack([torch.as_tensor(p) for p, _ in good])
    return PairBatch(pixels=pixels, captions=[c for _, c in good], skipped=len(items) - len(good))
