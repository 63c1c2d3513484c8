"""Child processes that tests/test_crash_resume.py kills with SIGKILL while they write.

``python -m tests.crash_worker cache ROOT WEIGHTS``: build the locked-feature cache of a small synthetic
set through a slow data source (many small shards, so a kill lands while shards are being written).
``python -m tests.crash_worker checkpoints OUT``: save checkpoints in a loop, continuing after the
latest one; every value in checkpoint ``step`` (weights, optimiser payload, config, tokenizer) is ``step``
and every second save re-saves the previous step (replacing it), as a resumed run does.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

CACHE_SIZE, CACHE_SHARD_ROWS, CACHE_BATCH = 192, 16, 8
CHECKPOINT_SAVES = 60


class SlowPairs(Dataset):
    """A dataset behind slow storage: each item takes a few milliseconds to arrive."""

    def __init__(self, inner: Dataset, delay_s: float) -> None:
        self.inner, self.delay_s = inner, delay_s

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        time.sleep(self.delay_s)
        return self.inner[index]


def cache_inputs(weights: Path, delay_s: float = 0.0):
    """The tower, dataset and cache key that both the worker and the test use."""
    from tests.helpers import TINY_IMAGE
    from training.config import ImageTowerConfig
    from training.data.pairs import pixel_transform
    from training.data.synthetic import SyntheticPairs, SyntheticWorld
    from training.feature_cache import cache_key
    from training.towers import build_image_tower

    tower = build_image_tower(ImageTowerConfig(**TINY_IMAGE, weights=weights)).eval()
    data = SyntheticPairs(SyntheticWorld(image_size=32), "lit", CACHE_SIZE, pixel_transform(tower.preprocess))
    key = cache_key(tower, tower.preprocess, data.fingerprint())
    return tower, (SlowPairs(data, delay_s) if delay_s else data), key


def build_cache(root: Path, weights: Path) -> None:
    from training.feature_cache import FeatureCache

    tower, data, key = cache_inputs(weights, delay_s=0.004)
    store = FeatureCache(root)
    if store.load(key) is None:  # as training does
        store.build(key, tower, data, batch_size=CACHE_BATCH, progress=False, shard_rows=CACHE_SHARD_ROWS)


def checkpoint_model() -> nn.Module:
    return nn.Sequential(*[nn.Linear(256, 256) for _ in range(4)])


def write_checkpoints(out: Path) -> None:
    from training.checkpoint import latest_checkpoint, save_checkpoint

    latest = latest_checkpoint(out)
    first = int(latest.name.split("-")[1]) + 1 if latest else 1
    model = checkpoint_model()
    for i in range(CHECKPOINT_SAVES):
        step = first + i // 2
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.fill_(step)
        state = {"step": step, "payload": torch.full((131072,), float(step))}

        def tokenizer(folder: Path, step: int = step) -> None:
            (folder / "tokenizer.json").write_text(json.dumps({"step": step}))

        save_checkpoint(out, step, model, state, json.dumps({"step": step}), tokenizer)


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "cache":
        build_cache(Path(args[0]), Path(args[1]))
    elif mode == "checkpoints":
        write_checkpoints(Path(args[0]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
