"""WebDataset tar shards as ``(pixels, caption)`` pairs: shard lists, per-epoch shuffling across
processes, the held-out split by sample key, and errors that name the shard and sample."""

from __future__ import annotations

import copy
import hashlib
import json
import random
import warnings
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from training.data.pairs import (
    IMAGE_ERRORS,
    SKIP_HINT,
    DataError,
    OnError,
    Pair,
    Transform,
    describe_error,
    load_image,
    stat_token,
)
from training.data.split import SPLITS, Split, in_split


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
        digest.update(stat_token(Path(url)).encode() if _is_local(url) else f"{url}\0remote\n".encode())
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
    raise DataError(f"{message}: re-create the shard (check it with `tar tf`), or {SKIP_HINT}") from exc


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
    fix = f"re-create the shard, or {SKIP_HINT}"
    found = sorted(k for k in sample if not k.startswith("__"))
    image_ext = next((e for e in image_exts if e in sample), None)
    caption_ext = next((e for e in caption_exts if e in sample), None)
    if image_ext is None or caption_ext is None:
        kind, wanted = ("image", image_exts) if image_ext is None else ("caption", caption_exts)
        raise DataError(f"{at} has no {kind} (looked for .{'/.'.join(wanted)}, found {found}): {fix}")
    try:
        image = load_image(sample[image_ext])
    except IMAGE_ERRORS as exc:
        raise DataError(f"{at}: undecodable image .{image_ext} ({describe_error(exc)}): {fix}") from None
    try:
        text = sample[caption_ext].decode("utf-8")
        caption = json.loads(text).get("caption") if caption_ext == "json" else text
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise DataError(f"{at}: unreadable caption .{caption_ext} ({exc}): {fix}") from None
    if not isinstance(caption, str) or not caption.strip():
        raise DataError(f"{at}: empty or non-string caption in .{caption_ext}: {fix}")
    return image, caption.strip()
