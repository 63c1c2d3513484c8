"""The scorer against a hand computation, through the same array code the GPU path runs."""

import math

import numpy as np
import pytest

from service.scoring import Scorer, gpu_array_module


def _normalised(rows: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_softmax_and_sigmoid_match_a_hand_computation() -> None:
    images, labels = _normalised(3, 8, 0), _normalised(5, 8, 1)
    scorer = Scorer()
    soft = scorer.probabilities(images, labels, 10.0, None, "softmax")
    sig = scorer.probabilities(images, labels, 10.0, -2.0, "sigmoid")
    for i in range(3):
        logits = [10.0 * float(images[i] @ labels[j]) for j in range(5)]
        total = sum(math.exp(v) for v in logits)
        for j in range(5):
            assert soft[i, j] == pytest.approx(math.exp(logits[j]) / total, abs=1e-6)
            assert sig[i, j] == pytest.approx(1 / (1 + math.exp(-(logits[j] - 2.0))), abs=1e-6)
    assert np.allclose(soft.sum(axis=1), 1.0, atol=1e-6)


def test_keyed_matrices_are_kept_and_evicted() -> None:
    scorer = Scorer(cached_matrices=2)
    images = _normalised(2, 4, 2)
    first = _normalised(3, 4, 3)
    a = scorer.probabilities(images, first, 5.0, None, "softmax", key=("m:1", "set-a"))
    # Same key: the kept matrix is used, even if the caller passes another array.
    b = scorer.probabilities(images, _normalised(3, 4, 9), 5.0, None, "softmax", key=("m:1", "set-a"))
    assert np.array_equal(a, b)
    assert scorer.holds(("m:1", "set-a"))
    c = scorer.probabilities(images, None, 5.0, None, "softmax", key=("m:1", "set-a"))
    assert np.array_equal(a, c)
    with pytest.raises(KeyError, match="pass the matrix"):
        scorer.probabilities(images, None, 5.0, None, "softmax", key=("m:1", "unknown"))
    scorer.probabilities(images, first, 5.0, None, "softmax", key=("m:1", "set-b"))
    scorer.probabilities(images, first, 5.0, None, "softmax", key=("m:1", "set-c"))
    assert ("m:1", "set-a") not in scorer._matrices  # LRU eviction
    scorer.forget(lambda key: key[0] == "m:1")
    assert not scorer._matrices


def test_best_available_follows_the_machine() -> None:
    expected = "gpu" if gpu_array_module() is not None else "cpu"
    assert Scorer.best_available().device == expected
