"""The scorer against a hand computation, through the same array code the GPU path runs."""

import logging
import math

import numpy as np
import pytest

from service.scoring import Scorer, ScoringError, gpu_array_module, self_test


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


def test_top_k_picks_the_best_labels_in_order_with_ties_to_the_earlier() -> None:
    images, labels = _normalised(4, 8, 4), _normalised(30, 8, 5)
    scorer = Scorer()
    probs = scorer.probabilities(images, labels, 7.0, None, "softmax")
    best, scores = scorer.top_k(images, labels, 7.0, None, "softmax", 5)
    assert best.shape == scores.shape == (4, 5)
    for row in range(4):
        assert best[row].tolist() == np.argsort(-probs[row], kind="stable")[:5].tolist()
        assert np.allclose(scores[row], probs[row, best[row]])
    tied = np.repeat(labels[:1], 3, axis=0)  # three identical labels: the earliest comes first
    assert scorer.top_k(images[:1], tied, 7.0, None, "softmax", 2)[0].tolist() == [[0, 1]]
    assert scorer.top_k(images, labels[:3], 7.0, None, "softmax", 10)[0].shape == (4, 3)  # k clamped


class Arrays:
    """A stand-in for CuPy: NumPy under another name."""

    def __getattr__(self, name: str):
        return getattr(np, name)


class BrokenArrays(Arrays):
    """Matrix products come out wrong: the self-test must catch it."""

    def asarray(self, value):
        return np.asarray(value) * 1.5


class FailingArrays(BrokenArrays):
    def exp(self, value):
        raise RuntimeError("CUDA_ERROR_NO_BINARY_FOR_GPU: kernel failed to compile")


def test_the_self_test_passes_on_numpy_and_catches_wrong_or_failing_devices() -> None:
    assert self_test(np) is None
    assert "differ" in self_test(BrokenArrays()) or "picks" in self_test(BrokenArrays())
    assert "kernel failed to compile" in self_test(FailingArrays())


def test_gpu_scoring_asked_for_but_impossible_is_an_error_and_auto_falls_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(ScoringError, match="self-test failed: RuntimeError: CUDA_ERROR_NO_BINARY"):
        Scorer.for_device("gpu", gpu=FailingArrays())
    with caplog.at_level(logging.INFO):
        scorer = Scorer.for_device("auto", gpu=FailingArrays())
    assert scorer.device == "cpu" and "scoring on the cpu: the GPU scoring self-test failed" in caplog.text
    assert Scorer.for_device("cpu").device == "cpu"
    assert Scorer.for_device("gpu", gpu=Arrays()).device == "gpu"  # an array module that passes is used
    if gpu_array_module()[0] is None:  # this machine: no CuPy or no device
        with pytest.raises(ScoringError, match="LIT_SCORING_DEVICE=gpu"):
            Scorer.for_device("gpu")
        assert Scorer.for_device("auto").device == "cpu"
