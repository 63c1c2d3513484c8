"""Image-text pair readers: CSV/JSONL manifests and WebDataset tar shards.

Both yield ``(pixels, caption)``. Bad data is either an error that names the file (and line, or shard
and sample key) and says how to fix it, or, with ``on_error="skip"``, a ``None`` item that
:func:`collate_pairs` drops and counts, so a run can report how much it skipped instead of silently
training on less.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import random
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image, UnidentifiedImageError

from lit_bundle.preprocess import PreprocessSpec, preprocess_image
from training.data.split import SPLITS, Split, in_split

OnError = Literal["raise", "skip"]
Transform = Callable[[Image.Image], Any]
Pair = tuple[Any, str]

_SKIP_HINT = "set data.on_error=skip to skip and count bad samples"
# PIL raises OSError (incl. UnidentifiedImageError) for most bad files, but some decoders raise these.
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


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


def _describe(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):  # its message only repeats the path or a BytesIO repr
        return "not a recognised image format"
    return f"{type(exc).__name__}: {exc}"


def _load_image(data: Path | bytes) -> Image.Image:
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
            image = _load_image(path)
        except FileNotFoundError:
            problem, detail = "missing image", ""
        except _IMAGE_ERRORS as exc:
            problem, detail = "unreadable image", f" [{_describe(exc)}]"
        else:
            return (self.transform(image) if self.transform is not None else image), record.caption
        if self.on_error == "skip":
            return None
        raise DataError(
            f"{problem} {path} (manifest {self.path} {record.where}){detail}: "
            f"fix the path or the file, or {_SKIP_HINT}"
        )

    def fingerprint(self) -> str:
        """Changes when the manifest or any image changes (size/mtime stat only, no image reads)."""
        digest = hashlib.sha256(b"manifest-v1\0")
        digest.update(self.path.read_bytes())
        digest.update(f"\0{self.image_key}\0{self.caption_key}\0{self.split}\0{self.holdout!r}\0".encode())
        for index in range(len(self.records)):
            digest.update(_stat_token(self.image_path(index)).encode())
        return digest.hexdigest()


def _stat_token(path: Path) -> str:
    try:
        stat = path.stat()
    except OSError:
        return f"{path}\0missing\n"
    return f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n"


# ----------------------------------------------------------------------------------------------
# WebDataset


def _is_local(url: str) -> bool:
    return "://" not in url and not url.startswith("pipe:")


def expand_shards(urls: str | list[str]) -> list[str]:
    """The shards that ``urls`` names, in order (the reader and the fingerprint both use this).

    A list is taken as the shards themselves. A string is a brace pattern (``data-{000..099}.tar``),
    several joined by ``::`` (webdataset's convention), or the path of an existing ``.txt`` shard-list
    file: one shard or brace pattern per line, blank lines and lines starting with ``#`` ignored, relative
    paths resolved against the file's folder.
    """
    from webdataset.shardlists import expand_urls  # lazy: webdataset is slow to import

    if not isinstance(urls, str):
        return [str(u) for u in urls]
    shards: list[str] = []
    for url in expand_urls(urls):
        if url.endswith(".txt") and _is_local(url):
            shards.extend(_read_shard_list(Path(url)))
        elif url:
            shards.append(url)
    return shards


def _read_shard_list(path: Path) -> list[str]:
    from webdataset.shardlists import expand_urls

    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise DataError(f"shard list {path} does not exist: check data.path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read shard list {path} ({exc}): it must be UTF-8 text") from exc
    shards = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for url in expand_urls(line):
            relative = _is_local(url) and not Path(url).is_absolute()
            shards.append(str(path.parent / url) if relative else url)
    if not shards:
        raise DataError(f"shard list {path} names no shards: add one shard or brace pattern per line")
    return shards


def webdataset_fingerprint(urls: str | list[str], split: Split = "all", holdout: float = 0.0) -> str:
    """Changes with the shard list, any local shard's size/mtime, and the split of it that is read."""
    holdout = holdout if split != "all" else 0.0
    digest = hashlib.sha256(f"webdataset-v2\0{split}\0{holdout!r}\0".encode())
    for url in expand_shards(urls):
        digest.update(_stat_token(Path(url)).encode() if _is_local(url) else f"{url}\0remote\n".encode())
    return digest.hexdigest()


class WebDatasetPairs(torch.utils.data.IterableDataset):
    """Stream ``(pixels, caption)`` (or ``None`` for a skipped bad sample) from tar shards.

    ``urls``: see :func:`expand_shards`. Only the samples of ``split`` are kept, by a hash of their
    ``__key__`` (see ``training.data.split``), before their images are decoded.

    The shards are split across ``torch.distributed`` ranks (unless ``split_by_node=False``: one process
    reads the whole split, e.g. for evaluation) and then across DataLoader workers, so in one epoch the
    readers together read every shard once; with fewer shards than ranks x workers some get none (use
    more, smaller shards). With ``shuffle_buffer > 0``, each epoch (see :meth:`set_epoch`) reads the shards
    in a permutation seeded by ``(seed, epoch)``, the same on every rank, and shuffles samples in a buffer
    seeded by ``(seed, epoch, rank, worker)``; otherwise shards and samples come in listed order.

    The pipeline is built in ``__iter__``: DataLoader workers get a pickled copy at each ``iter(loader)``,
    so ``set_epoch`` before iterating reaches them.
    """

    def __init__(
        self,
        urls: str | list[str],
        transform: Transform | None = None,
        *,
        on_error: OnError = "raise",
        shuffle_buffer: int = 0,
        seed: int = 0,
        split: Split = "all",
        holdout: float = 0.0,
        split_by_node: bool = True,
        image_exts: tuple[str, ...] = ("jpg", "jpeg", "png", "webp"),
        caption_exts: tuple[str, ...] = ("txt", "json"),
    ) -> None:
        super().__init__()
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if split not in SPLITS or not 0.0 <= holdout < 1.0:
            raise ValueError(f"split must be one of {SPLITS} and holdout in [0, 1), got {split!r}, {holdout}")
        shards = expand_shards(urls)
        if not shards:
            raise DataError(f"shard pattern {urls!r} expands to no shards: check data.path")
        missing = [u for u in shards if _is_local(u) and not Path(u).is_file()]
        if missing:
            raise DataError(
                f"WebDataset shard {missing[0]} does not exist ({len(missing)} of {len(shards)} missing): "
                "check data.path (brace patterns like data-{000..009}.tar are expanded)"
            )
        self.shards, self.transform, self.on_error = shards, transform, on_error
        self.shuffle_buffer, self.seed, self.epoch = shuffle_buffer, seed, 0
        self.split, self.holdout, self.split_by_node = split, holdout, split_by_node
        self.image_exts = tuple(e.lower() for e in image_exts)
        self.caption_exts = tuple(e.lower() for e in caption_exts)

    def set_epoch(self, epoch: int) -> None:
        """Read epoch ``epoch``'s shard order and shuffle next time the dataset is iterated."""
        self.epoch = epoch

    def whole(self) -> WebDatasetPairs:
        """A copy that reads this split whole in listed order, not split by rank (for caching, evaluation)."""
        clone = copy.copy(self)
        clone.split_by_node, clone.shuffle_buffer = False, 0
        return clone

    def fingerprint(self) -> str:
        return webdataset_fingerprint(self.shards, self.split, self.holdout)

    def __iter__(self) -> Iterator[Pair | None]:
        import webdataset as wds
        from webdataset.utils import pytorch_worker_info

        shuffle = self.shuffle_buffer > 0
        rank, _, worker, _ = pytorch_worker_info()
        pipeline = wds.DataPipeline(
            wds.SimpleShardList(self.shards, seed=f"{self.seed}-{self.epoch}" if shuffle else None),
            wds.split_by_node if self.split_by_node else None,
            wds.split_by_worker,
            wds.tarfile_to_samples(handler=partial(_shard_error, self.on_error)),
            wds.select(partial(_in_split, self.split, self.holdout)) if self.split != "all" else None,
            wds.shuffle(
                self.shuffle_buffer,
                initial=self.shuffle_buffer,
                rng=random.Random(f"{self.seed}-{self.epoch}-{rank}-{worker}"),
            )
            if shuffle
            else None,
            partial(
                _decode_samples,
                transform=self.transform,
                on_error=self.on_error,
                image_exts=self.image_exts,
                caption_exts=self.caption_exts,
            ),
        )
        return iter(pipeline)


def _in_split(split: Split, holdout: float, sample: dict[str, Any]) -> bool:
    return in_split(sample["__key__"], split, holdout)


def _shard_error(on_error: OnError, exc: Exception) -> bool:
    """webdataset handler for tar-level failures (missing, unreadable or truncated shards).

    webdataset appends context to ``exc.args``: the shard opener and expander append the shard url
    last, grouping appends ``(None, None)``, and errors on a member inside a shard carry nothing; those
    are re-raised so the expander catches them again, now with the url.
    """
    args = exc.args
    if len(args) >= 2 and isinstance(args[-1], str):
        where = f"WebDataset shard {args[-1]}"
    elif len(args) >= 3 and args[-1] is None and args[-2] is None:
        where = "a WebDataset shard"  # grouping error (e.g. duplicate member); the detail names the member
    else:
        raise exc
    detail = next((str(a) for a in args if isinstance(a, str)), "").split(" @ <")[0]
    message = f"cannot read {where} ({type(exc).__name__}: {detail})"
    if on_error == "skip":
        # Samples lost in a broken tar cannot be counted, so say so loudly instead.
        warnings.warn(f"{message}; skipping the rest of this shard", stacklevel=2)
        return True
    raise DataError(f"{message}: re-create the shard (check it with `tar tf`), or {_SKIP_HINT}") from exc


def _decode_samples(
    src: Iterable[dict[str, Any]],
    transform: Transform | None,
    on_error: OnError,
    image_exts: tuple[str, ...],
    caption_exts: tuple[str, ...],
) -> Iterator[Pair | None]:
    for sample in src:
        try:
            image, caption = _decode_sample(sample, image_exts, caption_exts)
        except DataError:
            if on_error == "skip":
                yield None
                continue
            raise
        yield (transform(image) if transform is not None else image), caption


def _decode_sample(
    sample: dict[str, Any], image_exts: tuple[str, ...], caption_exts: tuple[str, ...]
) -> tuple[Image.Image, str]:
    at = f"WebDataset shard {sample.get('__url__')} sample {sample.get('__key__')!r}"
    fix = f"re-create the shard, or {_SKIP_HINT}"
    found = sorted(k for k in sample if not k.startswith("__"))
    image_ext = next((e for e in image_exts if e in sample), None)
    caption_ext = next((e for e in caption_exts if e in sample), None)
    if image_ext is None or caption_ext is None:
        kind, wanted = ("image", image_exts) if image_ext is None else ("caption", caption_exts)
        raise DataError(f"{at} has no {kind} (looked for .{'/.'.join(wanted)}, found {found}): {fix}")
    try:
        image = _load_image(sample[image_ext])
    except _IMAGE_ERRORS as exc:
        raise DataError(f"{at}: undecodable image .{image_ext} ({_describe(exc)}): {fix}") from None
    try:
        text = sample[caption_ext].decode("utf-8")
        caption = json.loads(text).get("caption") if caption_ext == "json" else text
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise DataError(f"{at}: unreadable caption .{caption_ext} ({exc}): {fix}") from None
    if not isinstance(caption, str) or not caption.strip():
        raise DataError(f"{at}: empty or non-string caption in .{caption_ext}: {fix}")
    return image, caption.strip()


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
