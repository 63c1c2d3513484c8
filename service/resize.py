"""Pillow's ``Image.resize`` and the centre crop of ``resize_and_crop`` as matrix products on an array module
``xp`` (CuPy on a GPU, NumPy in the CPU tests): the GPU decoder's resize, within a grey level of Pillow.

Separable weight matrices with Pillow's kernels, antialiasing support, centres, border clipping, pass order
and 8-bit rounding after each pass, built on the host in float64 as Pillow computes its coefficients and
applied on the device in float32. Only the rows and columns the crop keeps are computed.
"""

from __future__ import annotations

import math
from functools import lru_cache
from types import ModuleType
from typing import Any

import numpy as np
import PIL

from lit_bundle.preprocess import PreprocessSpec, crop_plan

_PILLOW_ORDER = int(PIL.__version__.split(".")[0]) >= 13
_SUPPORT = {"bilinear": 1.0, "bicubic": 2.0, "lanczos": 3.0}


def _kernel(name: str, x: np.ndarray) -> np.ndarray:
    """Pillow's filters (libImaging/Resample.c), in float64 as Pillow computes its coefficients."""
    ax = np.abs(x)
    if name == "bilinear":
        return np.where(ax < 1.0, 1.0 - ax, 0.0)
    if name == "bicubic":  # a = -0.5
        near = (1.5 * ax - 2.5) * ax * ax + 1
        return np.where(ax < 1.0, near, np.where(ax < 2.0, (((ax - 5) * ax + 8) * ax - 4) * -0.5, 0.0))

    return np.where((x >= -3.0) & (x < 3.0), np.sinc(x) * np.sinc(x / 3), 0.0)  # lanczos, a = 3


@lru_cache(maxsize=8)  # dense and float64 (a few MB for big photos); Resizer keeps the trimmed device copies
def resize_weights(in_size: int, out_size: int, interpolation: str) -> np.ndarray:
    """The ``(out_size, in_size)`` float64 matrix ``M`` with ``M @ line`` = Pillow's resize of ``line``.

    As ``precompute_coeffs``: output ``i`` is centred at ``(i + 0.5) * scale``, the support grows with the
    downscale factor (antialiasing), taps are clipped at the borders and renormalised. Nearest picks
    ``floor((i + 0.5) * scale)``, accumulated like Pillow's ``ImagingScaleAffine``. Read-only (cached).
    """
    matrix = np.zeros((out_size, in_size))
    scale = in_size / out_size
    if interpolation == "nearest":
        position = scale * 0.5
        for i in range(out_size):
            matrix[i, min(int(position), in_size - 1)] = 1.0
            position += scale
    else:
        filterscale = max(scale, 1.0)
        support = _SUPPORT[interpolation] * filterscale
        center = (np.arange(out_size) + 0.5) * scale
        first = np.maximum((center - support + 0.5).astype(np.int64), 0)  # C's (int): toward zero
        stop = np.minimum((center + support + 0.5).astype(np.int64), in_size)
        taps = first[:, None] + np.arange(math.ceil(support) * 2 + 1)
        valid = taps < stop[:, None]
        weights = np.where(
            valid, _kernel(interpolation, (taps - center[:, None] + 0.5) * (1.0 / filterscale)), 0.0
        )
        total = weights.sum(axis=1, keepdims=True)
        weights = np.divide(weights, total, out=weights, where=total != 0.0)
        rows, cols = np.nonzero(valid)
        matrix[rows, taps[rows, cols]] = weights[rows, cols]
    matrix.flags.writeable = False
    return matrix


class Resizer:
    """``resize_and_crop`` on ``xp`` arrays: uint8 HWC in, uint8 ``(size, size, C)`` out, on the device."""

    def __init__(self, xp: ModuleType) -> None:
        self.xp = xp
        self._weights = lru_cache(maxsize=128)(self._upload)

    def _upload(
        self, in_size: int, out_size: int, interpolation: str, start: int, stop: int
    ) -> tuple[Any, int, int]:
        """Rows ``start:stop`` (what the crop keeps) on the device in float32, trimmed to the input range
        ``first:last`` they read; None when the axis keeps its size (Pillow skips that pass)."""
        if in_size == out_size:
            return None, start, stop
        rows = resize_weights(in_size, out_size, interpolation)[start:stop]
        used = np.flatnonzero(rows.any(axis=0))
        first, last = int(used[0]), int(used[-1]) + 1
        return self.xp.asarray(rows[:, first:last], dtype=self.xp.float32), first, last

    def __call__(self, pixels: Any, spec: PreprocessSpec) -> Any:
        height, width, channels = pixels.shape
        new_w, new_h, left, top = crop_plan(width, height, spec)
        wy, y0, y1 = self._weights(height, new_h, spec.interpolation, top, top + spec.size)
        wx, x0, x1 = self._weights(width, new_w, spec.interpolation, left, left + spec.size)
        # Planar (rows, channels, columns) float32: each pass is then one matrix product.
        planar = self.xp.ascontiguousarray(pixels[y0:y1, x0:x1].transpose(0, 2, 1), dtype=self.xp.float32)
        passes = [(wx, True), (wy, False)]
        if _PILLOW_ORDER and height - new_h > 2 * (width - new_w) and new_h < height:
            passes.reverse()  # Pillow 13 (python-pillow/Pillow#9549) runs such a resize vertical pass first
        for weights, horizontal in passes:
            if weights is None:
                continue
            rows, _, cols = planar.shape
            if horizontal:
                planar = (planar.reshape(-1, cols) @ weights.T).reshape(rows, channels, -1)
            else:
                planar = (weights @ planar.reshape(rows, -1)).reshape(-1, channels, cols)
            planar = self.xp.clip(self.xp.floor(planar + 0.5), 0, 255)  # 8 bits after each pass, as Pillow
        return planar.transpose(0, 2, 1).astype(self.xp.uint8)
