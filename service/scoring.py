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
from collections.abc import Hashable
from types import ModuleType
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def gpu_array_module() -> ModuleType | None:
    """CuPy when it is installed and sees a CUDA device, else None."""
    try:
        import cupy
    except ImportError:
        return None
    try:
        return cupy if cupy.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:  # no driver or no device: score on the CPU
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
    def best_available(cls) -> Scorer:
        xp = gpu_array_module()
        if xp is None:
            # Scoring a few images against thousands of labels is too small for BLAS threads, which only
            # contend with ONNX Runtime's own (measured: 10-19 ms with 2 threads, 0.2 ms with one).
            from threadpoolctl import threadpool_limits

            threadpool_limits(1, user_api="blas")
        scorer = cls(xp) if xp is not None else cls()
        log.info("scoring on the %s", scorer.device)
        return scorer

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

    def forget(self, predicate) -> None:
        """Drop device matrices whose key matches (e.g. those of an old model version)."""
        with self._lock:
            for key in [k for k in self._matrices if predicate(k)]:
                del self._matrices[key]

    def probabilities(
        self,
        image_emb: np.ndarray,
        label_matrix: np.ndarray | None,
        scale: float,
        bias: float | None,
        loss: str,
        key: Hashable | None = None,
    ) -> np.ndarray:
        """Softmax over labels, or independent sigmoids for sigmoid-trained models.

        ``label_matrix`` may be None when ``key`` names a matrix the scorer already holds.
        """
        xp = self.xp
        logits = scale * (xp.asarray(image_emb) @ self._on_device(label_matrix, key).T)
        if loss == "sigmoid":
            probs = 1.0 / (1.0 + xp.exp(-(logits + (bias or 0.0))))
        else:
            weights = xp.exp(logits - logits.max(axis=1, keepdims=True))
            probs = weights / weights.sum(axis=1, keepdims=True)
        return probs.get() if hasattr(probs, "get") else np.asarray(probs)
