"""Locked-image-tower feature cache (LiT paper, App. G).

A locked tower without augmentation maps each image to the same features every epoch, so they are
computed once and training reads them from memory-mapped shards instead of running the tower. The cache
is keyed by a hash of the tower's weights, its preprocessing and the data's fingerprint; changing any of
them gives a new key. A cache is built in a temporary folder and renamed into place only once complete,
so a half-written cache is never seen.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset
from tqdm import tqdm

from lit_bundle import PreprocessSpec
from training.data.pairs import collate_pairs

CACHE_FORMAT = 1
SHARD_ROWS = 65536


def cache_key(tower: nn.Module, preprocess: PreprocessSpec, data_fingerprint: str) -> str:
    """sha256 over the tower's class and weights, the preprocessing spec and the data fingerprint."""
    digest = hashlib.sha256()
    digest.update(f"format={CACHE_FORMAT};tower={type(tower).__qualname__}".encode())
    for name, tensor in sorted(tower.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    digest.update(preprocess.model_dump_json().encode())
    digest.update(data_fingerprint.encode())
    return digest.hexdigest()


class CachedFeatures:
    """Read-only view of one complete cache: features (memory-mapped shards) and their captions."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.meta = json.loads((directory / "meta.json").read_text())
        self.captions: list[str] = json.loads((directory / "captions.json").read_text())
        self._shards = [np.load(directory / name, mmap_mode="r") for name in self.meta["shards"]]
        self._offsets = np.cumsum([0] + [len(s) for s in self._shards])
        if self._offsets[-1] != len(self.captions) or len(self.captions) != self.meta["count"]:
            raise ValueError(f"feature cache {directory} is inconsistent: delete the folder to rebuild it")

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def skipped(self) -> int:
        return int(self.meta["skipped"])

    def get_batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, list[str]]:
        index = np.asarray(indices, dtype=np.int64)
        shard_of = np.searchsorted(self._offsets, index, side="right") - 1
        rows = np.empty((len(index), self.dim), dtype=np.float32)
        for shard in np.unique(shard_of):
            where = shard_of == shard
            rows[where] = self._shards[shard][index[where] - self._offsets[shard]]
        return torch.from_numpy(rows), [self.captions[i] for i in index]


class FeatureCache:
    """A folder of caches, one subfolder per key."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key

    def load(self, key: str) -> CachedFeatures | None:
        directory = self.path(key)
        if not (directory / "meta.json").is_file():
            return None
        return CachedFeatures(directory)

    def build(
        self,
        key: str,
        tower: nn.Module,
        dataset: Dataset | IterableDataset,
        batch_size: int = 256,
        workers: int = 0,
        device: torch.device | None = None,
        progress: bool = True,
    ) -> CachedFeatures:
        """Run ``tower`` once over ``dataset`` (items ``(pixels, caption)`` or ``None``) and store it."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:16]}-", dir=self.root))
        try:
            device = device or next(tower.parameters()).device
            meta = self._write(staging, tower, dataset, batch_size, workers, device, progress)
            (staging / "meta.json").write_text(json.dumps(meta, indent=1))
            if self.path(key).exists() and not (self.path(key) / "meta.json").is_file():
                shutil.rmtree(self.path(key))  # debris of an incomplete cache: never used, replaced
            try:
                os.rename(staging, self.path(key))
            except OSError:
                if not (self.path(key) / "meta.json").is_file():  # not another process winning the race
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return CachedFeatures(self.path(key))

    @staticmethod
    def _write(
        staging: Path,
        tower: nn.Module,
        dataset: Dataset | IterableDataset,
        batch_size: int,
        workers: int,
        device: torch.device,
        progress: bool,
    ) -> dict:
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_pairs)
        was_training = tower.training
        tower.eval()
        captions: list[str] = []
        pending: list[np.ndarray] = []
        shards: list[str] = []
        skipped, dim = 0, 0

        def flush() -> None:
            name = f"shard-{len(shards):05d}.npy"
            np.save(staging / name, np.concatenate(pending))
            shards.append(name)
            pending.clear()

        total = len(dataset) if not isinstance(dataset, IterableDataset) else None
        with torch.no_grad(), tqdm(total=total, desc="caching locked features", disable=not progress) as bar:
            for batch in loader:
                skipped += batch.skipped
                bar.update(len(batch.captions) + batch.skipped)
                if not batch.captions:
                    continue
                features = tower(batch.pixels.to(device)).float().cpu().numpy()
                dim = features.shape[1]
                pending.append(features)
                captions.extend(batch.captions)
                if sum(len(p) for p in pending) >= SHARD_ROWS:
                    flush()
        tower.train(was_training)
        if pending:
            flush()
        if not captions:
            raise ValueError("the dataset produced no usable samples, so there is nothing to cache")
        (staging / "captions.json").write_text(json.dumps(captions))
        return {
            "format": CACHE_FORMAT,
            "count": len(captions),
            "dim": dim,
            "skipped": skipped,
            "shards": shards,
        }
