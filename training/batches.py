"""Deterministic batch plans: the samples of step ``s`` are a pure function of (seed, s).

That makes resuming exact without saving sampler state, and gives each process its own slice of the
same global batch.
"""

from __future__ import annotations

import numpy as np


def batches_per_epoch(num_samples: int, global_batch: int) -> int:
    count = num_samples // global_batch
    if count == 0:
        raise ValueError(
            f"the dataset has {num_samples} samples, fewer than one global batch of {global_batch}: "
            "lower batch_size or add data"
        )
    return count


def global_batch_indices(num_samples: int, global_batch: int, seed: int, step: int) -> np.ndarray:
    """Indices of the global batch for optimiser step ``step`` (a fresh permutation every epoch)."""
    per_epoch = batches_per_epoch(num_samples, global_batch)
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_samples)
    return order[position * global_batch : (position + 1) * global_batch]


def local_micro_batches(batch: np.ndarray, rank: int, world_size: int, accumulation: int) -> list[np.ndarray]:
    """Split a global batch into this process's ``accumulation`` micro-batches.

    Micro-batch ``m`` of every process together forms one contrastive batch, so ``m`` is the outer split.
    """
    micro = np.array_split(batch, accumulation)
    return [np.array_split(part, world_size)[rank] for part in micro]


def check_divisible(global_batch: int, world_size: int, accumulation: int) -> None:
    if global_batch % (world_size * accumulation):
        raise ValueError(
            f"batch_size={global_batch} must be divisible by processes ({world_size}) x accumulation "
            f"({accumulation}): pick a batch_size that is a multiple of {world_size * accumulation}"
        )
