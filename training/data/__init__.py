"""Training data: deterministic synthetic shapes, CSV/JSONL manifests and WebDataset shards."""

from training.data.pairs import (
    DataError,
    ManifestPairs,
    PairBatch,
    PixelTransform,
    collate_pairs,
    pixel_transform,
)
from training.data.synthetic import COLOURS, SHAPES, SyntheticPairs, SyntheticWorld
from training.data.webdataset import WebDatasetPairs, expand_shards, webdataset_fingerprint

__all__ = [
    "COLOURS",
    "SHAPES",
    "DataError",
    "ManifestPairs",
    "PairBatch",
    "PixelTransform",
    "SyntheticPairs",
    "SyntheticWorld",
    "WebDatasetPairs",
    "collate_pairs",
    "expand_shards",
    "pixel_transform",
    "webdataset_fingerprint",
]
