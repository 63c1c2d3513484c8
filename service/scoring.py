"""Scoring ``image_embeddings @ label_matrix.T * scale (+ bias)`` on the GPU when there is one.

Choice: CuPy rather than a scoring graph in ONNX Runtime. The label matrices of registered label sets
stay on the device between requests (an LRU of device arrays keyed by model version, label set and its
update time), and the arithmetic is the same array code as on the CPU: the scorer is written against an
array module ``xp`` that is CuPy on a GPU and NumPy otherwise, so the CPU tests exercise the very code
the GPU runs. An ONNX Runtime graph would need ``onnx`` at serving time to build it and IOBinding
bookkeeping per request for no gain at these sizes. CuPy comes with the ``gpu`` extra.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from types import ModuleType
from typing import Any

import numpy as np

from service.device_handoff import to_host
from service.encoders import BackendConfigError

log = logging.getLogger(__name__)


class ScoringError(BackendConfigError):
    """GPU scoring was asked for (``LIT_SCORING_DEVICE=gpu``) and cannot run here."""


def gpu_array_module() -> tuple[ModuleType | None, str]:
    """CuPy when it is installed and sees a CUDA device, else None; and why not."""
    try:
        import cupy
    except ImportError:
        return None, "CuPy is not installed (it comes with the gpu extra)"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, no libcudart: CuPy imports but cannot reach a GPU
        return None, f"CuPy sees no CUDA device ({type(exc).__name__}: {exc})"
    return (cupy, "") if count > 0 else (None, "CuPy sees no CUDA device")


def self_test(xp: ModuleType) -> str | None:
    """Run what scoring runs (matmul, softmax, sigmoid, top-k, copy back) on ``xp`` against NumPy, which
    also compiles ``xp``'s kernels before the first request; None when all agree, else what failed."""
    rng = np.random.default_rng(0)
    images, labels = rng.normal(size=(3, 16)).astype(np.float32), rng.normal(size=(40, 16)).astype(np.float32)
    reference, device = Scorer(np), Scorer(xp)
    try:
        for loss, bias in (("softmax", None), ("sigmoid", -1.0)):
            want = reference.top_k(images, labels, 4.0, bias, loss, 5)
            got = device.top_k(images, labels, 4.0, bias, loss, 5)
            if not np.array_equal(got[0], want[0]):
                return f"{loss} top-k picks {got[0].tolist()} where NumPy picks {want[0].tolist()}"
            if not np.allclose(got[1], want[1], atol=1e-5):
                return f"{loss} scores differ from NumPy's by {np.abs(got[1] - want[1]).max():.2e}"
    except Exception as exc:  # a kernel that fails to compile or run, a missing library
        return f"{type(exc).__name__}: {exc}"
    return None


class Scorer:
    """Probabilities over candidate labels; label matrices with a ``key`` stay on the device."""

    def __init__(self, xp: ModuleType = np, cached_matrices: int = 64) -> None:
        self.xp = xp
        self.device = "gpu" if xp is not np else "cpu"
        self._matrices: OrderedDict[Hashable, Any] = OrderedDict()
        self._capacity = cached_matrices
        self._lock = threading.Lock()

    @classmethod
    def for_device(cls, device: str = "auto", gpu: ModuleType | None = None) -> Scorer:
        """``cpu``, ``gpu`` (an error when the GPU cannot score: no CuPy, no device, or a failed
        self-test) or ``auto`` (the GPU when it passes its self-test, else the CPU, with the reason
        logged). ``gpu`` overrides the CuPy lookup (tests)."""
        why = "LIT_SCORING_DEVICE=cpu"
        if device != "cpu":
            xp, why = (gpu, "") if gpu is not None else gpu_array_module()
            if xp is not None:
                failure = self_test(xp)
                if failure is None:
                    log.info("scoring on the gpu (self-test passed)")
                    return cls(xp)
                why = f"the GPU scoring self-test failed: {failure}"
            if device == "gpu":
                raise ScoringError(
                    f"GPU scoring was asked for (LIT_SCORING_DEVICE=gpu) but {why}: install the gpu extra "
                    "on a machine with an NVIDIA GPU, or set LIT_SCORING_DEVICE=auto or cpu"
                )
        # Scoring a few images against thousands of labels is too small for BLAS threads, which only
        # contend with ONNX Runtime's own (measured: 10-19 ms with 2 threads, 0.2 ms with one).
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, user_api="blas")
        log.info("scoring on the cpu: %s", why)
        return cls()

    def holds(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._matrices

    def _on_device(self, matrix: np.ndarray | None, key: Hashable | None) -> Any:
        if key is None:
            return self.xp.asarray(matrix)
        with self._lock:
            found = self._matrices.get(key)
            if found is not None:
                self._matrices.move_to_end(key)
                return found
        if matrix is None:
            raise KeyError(f"no label matrix kept for {key!r}: pass the matrix")
        uploaded = self.xp.asarray(matrix)
        with self._lock:
            self._matrices[key] = uploaded
            while len(self._matrices) > self._capacity:
                self._matrices.popitem(last=False)
        return uploaded

    def forget(self, predicate: Callable[[Any], bool]) -> None:
        """Drop device matrices whose key matches (e.g. those of an old model version)."""
        with self._lock:
            for key in [k for k in self._matrices if predicate(k)]:
                del self._matrices[key]

    def _probabilities(
        self,
        image_emb: Any,
        label_matrix: np.ndarray | None,
        scale: float,
        bias: float | None,
        loss: str,
        key: Hashable | None,
    ) -> Any:
        xp = self.xp
        logits = scale * (xp.asarray(image_emb) @ self._on_device(label_matrix, key).T)
        if loss == "sigmoid":
            return 1.0 / (1.0 + xp.exp(-(logits + (bias or 0.0))))
        weights = xp.exp(logits - logits.max(axis=1, keepdims=True))
        return weights / weights.sum(axis=1, keepdims=True)

    def probabilities(
        self,
        image_emb: Any,
        label_matrix: np.ndarray | None,
        scale: float,
        bias: float | None,
        loss: str,
        key: Hashable | None = None,
    ) -> np.ndarray:
        """Softmax over labels, or independent sigmoids for sigmoid-trained models, ``(N, L)`` on the host.

        ``label_matrix`` may be None when ``key`` names a matrix the scorer already holds.
        """
        return to_host(self._probabilities(image_emb, label_matrix, scale, bias, loss, key))

    def top_k(
        self,
        image_emb: Any,
        label_matrix: np.ndarray | None,
        scale: float,
        bias: float | None,
        loss: str,
        k: int,
        key: Hashable | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best labels of each image, best first (ties: the earlier label), and their scores:
        ``(N, k)`` indices and probabilities. Selection runs where the scores are; only these come back."""
        xp = self.xp
        probs = self._probabilities(image_emb, label_matrix, scale, bias, loss, key)
        k = min(k, probs.shape[1])
        order = xp.argsort(-probs, axis=1, kind="stable")[:, :k]
        return to_host(order), to_host(xp.take_along_axis(probs, order, axis=1))
