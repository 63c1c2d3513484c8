"""Locked-image-tower feature cache (LiT paper, App. G).

A locked tower without augmentation maps each image to the same features every epoch, so they are
computed once and training reads them from memory-mapped shards instead of running the tower. The cache
is keyed by a hash of the tower's weights, its preprocessing and the data's fingerprint; changing any of
them gives a new key. A cache is built in a hidden staging folder, flushed to disk and renamed into place
only once complete, so no reader ever sees a half-written shard; ``meta.json`` records each file's sha256
(``CachedFeatures.verify``). Staging folders of builds that were killed are deleted by the next build.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset
from tqdm import tqdm

from lit_bundle import PreprocessSpec, atomic
from lit_bundle.manifest import sha256_file
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

    def verify(self) -> None:
        """Re-hash every file against ``meta.json``; raises ``ValueError`` naming the first that differs."""
        expected = self.meta.get("sha256")
        if not expected:
            raise ValueError(f"feature cache {self.directory} has no checksums (an older version built it)")
        for name, digest in expected.items():
            if sha256_file(self.directory / name) != digest:
                raise ValueError(f"feature cache file {self.directory / name} is corrupt: delete the folder")

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
        shard_rows: int = SHARD_ROWS,
    ) -> CachedFeatures:
        """Run ``tower`` once over ``dataset`` (items ``(pixels, caption)`` or ``None``) and store it.

        Safe to kill at any point: the cache appears whole or not at all, and a rerun builds it again.
        """
        atomic.remove_stale(self.root)  # staging folders of builds that were killed
        target = self.path(key)
        with atomic.staging_dir(self.root, key[:16]) as staging:
            device = device or next(tower.parameters()).device
            meta = self._write(staging, tower, dataset, batch_size, workers, device, progress, shard_rows)
            files = [*meta["shards"], "captions.json"]
            meta["sha256"] = {name: sha256_file(staging / name) for name in files}
            (staging / "meta.json").write_text(json.dumps(meta, indent=1))
            debris = target.exists() and not (target / "meta.json").is_file()
            if debris:  # not made by this module (a build by hand, an older version): never used, replaced
                shutil.rmtree(target)
            try:
                atomic.commit_dir(staging, target)
            except OSError:
                if not (target / "meta.json").is_file():  # not another process winning the race
                    raise
        return CachedFeatures(target)

    @staticmethod
    def _write(
        staging: Path,
        tower: nn.Module,
        dataset: Dataset | IterableDataset,
        batch_size: int,
        workers: int,
        device: torch.device,
        progress: bool,
        shard_rows: int,
    ) -> dict:
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_pairs)
        was_training = tower.training
        tower.eval()
        captions: list[str] = []
        pending: list[np.ndarray] = []
        shards: list[str] = []
        skipped, dim = 0, 0

        def flush(rows: int | None = None) -> None:
            """Write the first ``rows`` pending rows (all by default) as the next shard."""
            block = np.concatenate(pending)
            name = f"shard-{len(shards):05d}.npy"
            np.save(staging / name, block[:rows])
            shards.append(name)
            pending.clear()
            if rows is not None and len(block) > rows:
                pending.append(block[rows:])

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
                while sum(len(p) for p in pending) >= shard_rows:
                    flush(shard_rows)
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
