"""Run under ``torchrun`` by tests/test_webdataset_scale.py: WebDataset shards read by several processes.

``python tests/wds_worker.py OUT PATTERN HOLDOUT CONFIG...``: each rank writes ``OUT/rank-<r>.json``, the
captions (each a sample's key) it reads in epochs 0 and 1 of the training split through a DataLoader with
two workers, and then trains with each ``CONFIG`` in turn.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from torch.utils.data import DataLoader

from lit_bundle.preprocess import PreprocessSpec
from training import distributed
from training.config import TrainConfig, load_config
from training.data.pairs import pixel_transform
from training.data.webdataset import WebDatasetPairs
from training.train import train

SEED, EPOCHS, WORKERS = 3, 2, 2


def epoch_captions(pattern: str, holdout: float) -> dict[int, list[str]]:
    data = WebDatasetPairs(
        pattern, pixel_transform(PreprocessSpec(size=8)), shuffle_buffer=4, seed=SEED, split="train",
        holdout=holdout,
    )  # fmt: skip
    loader = DataLoader(data, batch_size=None, num_workers=WORKERS)
    seen = {}
    for epoch in range(EPOCHS):
        data.set_epoch(epoch)  # before iter(loader), which sends the workers a copy
        seen[epoch] = [caption for _, caption in loader]
    return seen


def main(out: str, pattern: str, holdout: str, *configs: str) -> None:
    seen = epoch_captions(pattern, float(holdout))  # ranks from torchrun's environment
    (Path(out) / f"rank-{os.environ['RANK']}.json").write_text(json.dumps(seen))
    for config in configs:
        train(load_config(TrainConfig, Path(config), []), progress=False)
    distributed.shutdown_distributed()


if __name__ == "__main__":
    main(*sys.argv[1:])
