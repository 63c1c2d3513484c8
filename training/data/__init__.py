"""Training data: deterministic synthetic shapes, CSV/JSONL manifests and WebDataset shards."""

from training.data.pairs import (
    DataError,
    ManifestPairs,
    PairBatch,
    PixelTransform,
    collate_pairs,
    pixel_transform,
    webdataset_fingerprint,
    webdataset_pairs,
)
from training.data.synthetic import COLOURS, SHAPES, SyntheticPairs, SyntheticWorld

__all__ = [
    "COLOURS",
    "SHAPES",
    "DataError",
    "ManifestPairs",
    "PairBatch",
    "PixelTransform",
    "SyntheticPairs",
    "SyntheticWorld",
    "collate_pairs",
    "pixel_transform",
    "webdataset_fingerprint",
    "webdataset_pairs",
]
