import numpy as np
import pytest

from training.batches import check_divisible, global_batch_indices, local_micro_batches


def test_global_batches_are_deterministic_and_cover_an_epoch() -> None:
    steps = [global_batch_indices(40, 8, seed=3, step=s) for s in range(5)]
    assert np.array_equal(steps[2], global_batch_indices(40, 8, seed=3, step=2))
    assert sorted(np.concatenate(steps).tolist()) == list(range(40))
    assert not np.array_equal(global_batch_indices(40, 8, 3, 5), steps[0])  # next epoch reshuffles


def test_processes_and_micro_batches_partition_the_global_batch() -> None:
    batch = global_batch_indices(100, 16, seed=0, step=0)
    parts = [local_micro_batches(batch, rank, 2, 2) for rank in range(2)]
    # micro-batch m of both ranks together = the m-th half of the global batch, rank 0 first
    for m in range(2):
        assert np.array_equal(np.concatenate([parts[0][m], parts[1][m]]), np.array_split(batch, 2)[m])


def test_indivisible_batch_is_refused() -> None:
    with pytest.raises(ValueError, match="divisible"):
        check_divisible(10, 4, 1)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        global_batch_indices(3, 8, 0, 0)
