"""Batch-size buckets: the few shapes an accelerated encoder ever sees, so every one can be warmed.

On CUDA and TensorRT the first run of each new input shape pays for kernel selection (cuDNN autotuning,
TensorRT tactic timing): seconds, on the request path, for whichever request first sends that batch size.
So there the gateway pads each image batch with zero images up to the next bucket (powers of two up to
the largest batch, and that batch itself) and warms every bucket before it reports ready. On the CPU any
shape runs at once and padding would only waste work: batches go as they are.
"""

from __future__ import annotations

import numpy as np


def batch_buckets(largest: int) -> tuple[int, ...]:
    """``1, 2, 4, ...`` below ``largest``, then ``largest``."""
    if largest < 1:
        raise ValueError(f"the largest batch must be >= 1, got {largest}")
    sizes = []
    size = 1
    while size < largest:
        sizes.append(size)
        size *= 2
    return (*sizes, largest)


def pad_to_bucket(batch: np.ndarray, buckets: tuple[int, ...]) -> np.ndarray:
    """``batch`` with zero rows appended up to the smallest bucket that holds it (as is if none does)."""
    count = len(batch)
    target = next((b for b in buckets if b >= count), count)
    if target == count:
        return batch
    padding = np.zeros((target - count, *batch.shape[1:]), dtype=batch.dtype)
    return np.concatenate([batch, padding])
