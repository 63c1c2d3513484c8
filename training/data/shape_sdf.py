"""Signed distance functions of the version-2 shapes, and coverage masks drawn from them.

A signed distance (negative inside) gives filled shapes, outlines of any width (an inner stroke) and
anti-aliasing of any softness, or none, from one formula per shape, evaluated only on the pixels of the
shape's bounding window. Shapes live in a unit frame (circumradius ~1, y down) and the shape-specific
``detail`` in [0, 1) varies the free proportion some of them have (ring width, crescent depth, oval
aspect).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

from training.data.vocabulary import SHAPES_V2

_SQRT2_4 = np.float32(np.sqrt(2.0) / 4)

# Half the thickness of each shape's body (unit frame): an outline's stroke stays well under it, so an
# outlined shape keeps a visible hole instead of filling its own arms (the star's arms, the bolt).
HALF_THICKNESS: dict[str, float] = {
    "circle": 1.0,
    "square": 0.72,
    "triangle": 0.47,
    "star": 0.25,
    "cross": 0.3,
    "ring": 0.16,
    "heart": 0.5,
    "crescent": 0.25,
    "arrow": 0.26,
    "semicircle": 0.5,
    "bolt": 0.25,
    "oval": 0.5,
}


@lru_cache(maxsize=1)
def _polygons() -> dict[str, np.ndarray]:
    """Edges of the shapes without a cheap closed-form distance, drawn as general polygons."""
    polygons = {
        "arrow": np.array(
            [(-1, -0.26), (0.2, -0.26), (0.2, -0.68), (1, 0), (0.2, 0.68), (0.2, 0.26), (-1, 0.26)]
        ),
        "bolt": np.array(
            [(-0.1, -1), (0.5, -1), (0.15, -0.15), (0.55, -0.15), (-0.35, 1), (-0.1, 0.15), (-0.55, 0.15)]
        )
        * 0.9,
    }
    return {name: _edges(v.astype(np.float32)) for name, v in polygons.items()}


def _edges(verts: np.ndarray) -> np.ndarray:
    """Rows vx, vy, ex, ey, 1/|e|^2, next vy of a polygon's edges (precomputed for :func:`_polygon`)."""
    vx, vy = verts[:, 0], verts[:, 1]
    ex, ey = np.roll(vx, -1) - vx, np.roll(vy, -1) - vy
    return np.stack([vx, vy, ex, ey, 1 / (ex * ex + ey * ey), np.roll(vy, -1)]).astype(np.float32)


def _polygon(x: np.ndarray, y: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Exact signed distance to a simple polygon (Inigo Quilez's sdPolygon, vectorised over edges)."""
    vx, vy, ex, ey, inv, next_y = edges
    px, py = x[..., None] - vx, y[..., None] - vy
    t = np.minimum(np.maximum((px * ex + py * ey) * inv, 0), 1)
    bx, by = px - ex * t, py - ey * t
    dist = np.sqrt((bx * bx + by * by).min(-1))
    above, below, left = py >= 0, y[..., None] < next_y, ex * py > ey * px
    crossings = ((above == below) & (below == left)).sum(-1)
    return np.where(crossings % 2 == 1, -dist, dist)


def _disc(x: np.ndarray, y: np.ndarray, radius: float = 1.0) -> np.ndarray:
    return np.sqrt(x * x + y * y) - np.float32(radius)


def _box(x: np.ndarray, y: np.ndarray, half: float) -> np.ndarray:
    qx, qy = np.abs(x) - np.float32(half), np.abs(y) - np.float32(half)
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0)


def _triangle(x: np.ndarray, y: np.ndarray, circumradius: float) -> np.ndarray:
    """Quilez's sdEquilateralTriangle, apex up, its bounding box (not centroid) at the origin."""
    k, half_side = np.float32(np.sqrt(3.0)), np.float32(circumradius * np.sqrt(3.0) / 2)
    px = np.abs(x) - half_side
    py = np.float32(circumradius / 4) - y + half_side / k  # y up, centroid a quarter radius below the centre
    fold = px + k * py > 0
    px, py = np.where(fold, (px - k * py) / 2, px), np.where(fold, (-k * px - py) / 2, py)
    px = px - np.minimum(np.maximum(px, -2 * half_side), 0)
    return -np.sqrt(px * px + py * py) * np.sign(py)


def _star(x: np.ndarray, y: np.ndarray, inner: float) -> np.ndarray:
    """Quilez's sdStar5: five points on the unit circle, inner vertices at radius ``inner``."""
    k1x, k1y = np.float32(0.809016994375), np.float32(-0.587785252292)
    px, py = np.abs(x), -y
    for kx, ky in ((k1x, k1y), (-k1x, k1y)):
        d = 2 * np.maximum(kx * px + ky * py, 0)
        px, py = px - d * kx, py - d * ky
    px, py = np.abs(px), py - 1
    bax, bay = np.float32(-inner * k1y), np.float32(inner * k1x - 1)
    h = np.minimum(np.maximum((px * bax + py * bay) / (bax * bax + bay * bay), 0), 1)
    return np.sqrt((px - bax * h) ** 2 + (py - bay * h) ** 2) * np.sign(py * bax - px * bay)


def _cross(x: np.ndarray, y: np.ndarray, half_width: float) -> np.ndarray:
    """Quilez's sdCross: a plus sign with unit-length arms ``half_width`` thick on each side."""
    ax, ay = np.abs(x), np.abs(y)
    px, py = np.maximum(ax, ay), np.minimum(ax, ay)
    qx, qy = px - 1, py - np.float32(half_width)
    k = np.maximum(qx, qy)
    wx, wy = np.where(k > 0, qx, np.float32(half_width) - px), np.where(k > 0, qy, -k)
    return np.sign(k) * np.sqrt(np.maximum(wx, 0) ** 2 + np.maximum(wy, 0) ** 2)


def _heart(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Quilez's sdHeart (two arcs and a V), scaled so the heart is ~2 units across, pointing down."""
    s = np.float32(0.6)
    hx, hy = np.abs(x) * s, np.float32(0.552) - y * s
    far = np.sqrt((hx - 0.25) ** 2 + (hy - 0.75) ** 2) - _SQRT2_4
    m = np.maximum(hx + hy, 0) * 0.5
    near = np.sqrt(np.minimum(hx * hx + (hy - 1) ** 2, (hx - m) ** 2 + (hy - m) ** 2)) * np.sign(hx - hy)
    return np.where(hx + hy > 1, far, near) / s


def _oval(x: np.ndarray, y: np.ndarray, aspect: float) -> np.ndarray:
    """Quilez's ellipse approximation, exact on the boundary, good enough for strokes and edges."""
    b = np.float32(aspect)
    k0 = np.sqrt(x * x + (y / b) ** 2)
    k1 = np.sqrt(x * x + (y / (b * b)) ** 2)
    return k0 * (k0 - 1) / np.maximum(k1, np.float32(1e-6))


def unit_sdf(name: str, x: np.ndarray, y: np.ndarray, detail: float) -> np.ndarray:
    """Signed distance (unit frame) of shape ``name``; exact inside, where strokes are measured."""
    analytic: dict[str, Callable[[], np.ndarray]] = {
        "circle": lambda: _disc(x, y),
        "square": lambda: _box(x, y, 0.72),
        "triangle": lambda: _triangle(x, y, 0.95),
        "star": lambda: _star(x, y, 0.42),
        "cross": lambda: _cross(x, y, 0.3),
        "ring": lambda: np.abs(_disc(x, y, 0.78 + 0.06 * detail)) - np.float32(0.22 - 0.06 * detail),
        "crescent": lambda: np.maximum(_disc(x, y), -_disc(x - np.float32(0.35 + 0.2 * detail), y, 0.85)),
        "semicircle": lambda: np.maximum(_disc(x, y - np.float32(0.4)), y - np.float32(0.4)),
        "heart": lambda: _heart(x, y),
        "oval": lambda: _oval(x, y, 0.5 + 0.12 * detail),
    }
    if name in analytic:
        return analytic[name]()
    return _polygon(x, y, _polygons()[name])


def shape_alpha(
    shape: int,
    size: int,
    centre: tuple[float, float],
    radius: float,
    angle: float,
    detail: float,
    stroke: float,
    softness: float,
) -> tuple[tuple[slice, slice], np.ndarray]:
    """``(window, coverage)``: the shape's bounding window in the image and its coverage there.

    ``centre``/``radius`` in pixels; ``stroke`` > 0 draws an inner outline that many pixels wide, 0 a
    filled shape; ``softness`` is the anti-aliasing ramp in pixels, 0 for hard (aliased) edges.
    """
    reach = radius * 1.15 + 2
    x0, x1 = max(0, int(centre[0] - reach)), min(size, int(np.ceil(centre[0] + reach)))
    y0, y1 = max(0, int(centre[1] - reach)), min(size, int(np.ceil(centre[1] + reach)))
    window = (slice(y0, max(y0, y1)), slice(x0, max(x0, x1)))
    xs = np.arange(x0, max(x0, x1), dtype=np.float32) + np.float32(0.5 - centre[0])
    ys = np.arange(y0, max(y0, y1), dtype=np.float32)[:, None] + np.float32(0.5 - centre[1])
    cos, sin = np.float32(np.cos(angle) / radius), np.float32(np.sin(angle) / radius)
    u, v = xs * cos + ys * sin, ys * cos - xs * sin  # image -> unit frame (rotated by -angle)
    sdf = unit_sdf(SHAPES_V2[shape], u, v, detail) * np.float32(radius)
    if stroke > 0:
        sdf = np.maximum(sdf, -sdf - np.float32(stroke))
    return window, coverage(sdf, softness)


def bar_alpha(
    size: int, point: tuple[float, float], angle: float, half_width: float, softness: float
) -> np.ndarray:
    """Coverage of an infinite straight bar through ``point`` (pixels) at ``angle``, over the whole image."""
    axis = np.arange(size, dtype=np.float32) + np.float32(0.5)
    nx, ny = np.float32(-np.sin(angle)), np.float32(np.cos(angle))
    sdf = np.abs((axis - point[0]) * nx + (axis[:, None] - point[1]) * ny) - np.float32(half_width)
    return coverage(sdf, softness)


def coverage(sdf: np.ndarray, softness: float) -> np.ndarray:
    """Pixel coverage from a signed distance in pixels: a linear ramp ``softness`` wide, or a hard edge."""
    if softness <= 0:
        return (sdf < 0).astype(np.float32)
    ramp = np.float32(0.5) - sdf * np.float32(1 / softness)
    return np.minimum(np.maximum(ramp, 0, out=ramp), 1, out=ramp).astype(np.float32, copy=False)
