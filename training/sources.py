"""Turn a data config into a dataset of ``(pixels, caption)`` items and its fingerprint."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset

from training.config import DataConfig
from training.data.pairs import ManifestPairs, PixelTransform
from training.data.prerender import PrerenderedPairs
from training.data.split import Split
from training.data.synthetic import SyntheticPairs, SyntheticWorld
from training.data.webdataset import WebDatasetPairs

Transform = Callable[[Image.Image], torch.Tensor]


def world_for(cfg: DataConfig) -> SyntheticWorld:
    synthetic = cfg.synthetic
    return SyntheticWorld(image_size=synthetic.image_size, seed=synthetic.seed, version=synthetic.version)


def pair_dataset(
    cfg: DataConfig, transform: Transform, seed: int = 0, split: Split = "train"
) -> Dataset | IterableDataset:
    """The ``split`` of the pairs that ``cfg`` describes (for synthetic data, always its ``lit`` split).

    WebDataset: the ``train`` split is the training stream, shuffled per epoch (``set_epoch``) and shared
    among ``torch.distributed`` ranks; other splits (``heldout`` for evaluation) are read whole, in
    order, by the one process that iterates them.
    """
    if cfg.kind == "synthetic":
        if cfg.synthetic.prerender and isinstance(transform, PixelTransform):
            return PrerenderedPairs(
                world_for(cfg), "lit", cfg.synthetic.train_size, transform.spec, max(1, cfg.workers)
            )
        return SyntheticPairs(world_for(cfg), "lit", cfg.synthetic.train_size, transform)
    if cfg.path is None:
        raise ValueError(f"data.path is required for data.kind={cfg.kind} (a manifest file or shard pattern)")
    if cfg.kind == "manifest":
        return ManifestPairs(
            Path(cfg.path),
            transform,
            image_root=cfg.image_root,
            image_key=cfg.image_key,
            caption_key=cfg.caption_key,
            on_error=cfg.on_error,
            split=split,
            holdout=cfg.holdout or 0.0,
        )
    training = split == "train"
    return WebDatasetPairs(
        cfg.path,
        transform,
        on_error=cfg.on_error,
        shuffle_buffer=1000 if training else 0,
        seed=seed,
        split=split,
        holdout=cfg.holdout or 0.0,  # a number once TrainConfig has validated it
        split_by_node=training,
    )


def fingerprint(cfg: DataConfig, dataset: Dataset | IterableDataset) -> str:
    """Changes when the data ``dataset`` reads changes: for WebDataset, the shard list and the split."""
    return dataset.fingerprint()  # type: ignore[union-attr]


def caption_corpus(dataset: Dataset | IterableDataset, limit: int = 20000) -> list[str]:
    """Captions to train a from-scratch tokenizer on (without decoding images where possible)."""
    if isinstance(dataset, WebDatasetPairs):
        dataset = dataset.whole()  # every process trains the same tokenizer on the same captions
    captions = getattr(dataset, "captions", None)
    if captions is not None:
        return list(captions)[:limit]
    items = (dataset[i] for i in range(len(dataset))) if not isinstance(dataset, IterableDataset) else dataset
    return [item[1] for item in itertools.islice(items, limit) if item is not None]
