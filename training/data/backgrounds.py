"""Backgrounds of the synthetic world's version 2, and the contrast rule that keeps shapes visible.

A background is a pattern ``t`` in [0, 1] (flat, gradient, low-frequency blobs, stripes, checks, or
1/f "photo" noise) blended between two palette colours. The pattern is drawn once; only the palette is
resampled when it sits too close to the shape's colour, which keeps the rejection loop cheap.

Contrast is measured in CIELAB (CIE76 distance, ~2.3 is a just-noticeable difference) between the shape's
colour and the background under and around the shape (its bounding window): the mean background colour
must be at least ``MIN_CONTRAST`` away, and 90% of its pixels at least ``MIN_PIXEL_CONTRAST`` away (so a
grey shape on black-and-white checks, whose mean is grey, is rejected too).
"""

from __future__ import annotations

import colorsys
from functools import lru_cache

import numpy as np

from training.data.vocabulary import BACKGROUNDS

MIN_CONTRAST = 35.0
MIN_PIXEL_CONTRAST = 20.0
# CIELAB lightness bands of the flat kinds (any hue and saturation the band allows).
FLAT_LIGHTNESS: dict[str, tuple[float, float]] = {
    "light": (78.0, 98.0),
    "dark": (3.0, 28.0),
    "mid": (32.0, 72.0),
}

_XYZ = np.array(
    [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]], dtype=np.float32
) / np.array([[0.95047], [1.0], [1.08883]], dtype=np.float32)


@lru_cache(maxsize=1)
def _linear_lut() -> np.ndarray:
    """sRGB decoding of each 8-bit level, for a table look-up instead of a power per pixel."""
    c = np.arange(256, dtype=np.float64) / 255
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB values in [0, 255] (rounded to 8 bits, as they are stored), any leading shape."""
    levels = np.minimum(np.maximum(np.asarray(rgb, dtype=np.float32) + np.float32(0.5), 0), 255).astype(
        np.uint8
    )
    xyz = _linear_lut()[levels] @ _XYZ.T
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz * np.float32(1 / (3 * (6 / 29) ** 2)) + 4 / 29)
    return f @ _LAB + _LAB_OFFSET


# Lab from f(X), f(Y), f(Z): L = 116 fy - 16, a = 500 (fx - fy), b = 200 (fy - fz).
_LAB = np.array([[0, 500, 0], [116, -500, 200], [0, 0, -200]], dtype=np.float32)
_LAB_OFFSET = np.array([-16, 0, 0], dtype=np.float32)


def contrast(background: np.ndarray, rgb: np.ndarray, mean: np.ndarray | None = None) -> tuple[float, float]:
    """``(mean-colour distance, 10th-percentile pixel distance)`` in Lab between a colour and pixels.

    ``mean`` is the background's mean colour when ``background`` is only a sample of the pixels.
    """
    pixels = background.reshape(-1, 3)
    mean = pixels.mean(0) if mean is None else mean
    lab = srgb_to_lab(np.concatenate([pixels, np.reshape(mean, (1, 3)), np.reshape(rgb, (1, 3))]))
    distance = np.sqrt(((lab[:-1] - lab[-1]) ** 2).sum(-1))
    tenth = len(pixels) // 10
    return float(distance[-1]), float(np.partition(distance[:-1], tenth)[tenth])


def passes(background: np.ndarray, rgb: np.ndarray, mean: np.ndarray | None = None) -> bool:
    """Whether ``rgb`` stands out from ``background`` by the contrast rule (see the module docstring)."""
    mean_distance, pixel_distance = contrast(background, rgb, mean)
    return mean_distance >= MIN_CONTRAST and pixel_distance >= MIN_PIXEL_CONTRAST


class ContrastCheck:
    """The contrast rule for several colours, each over its own window of one pattern, for many palettes.

    Built once per image (a thinned sample and the exact mean of each window's blend weights; blending
    is linear, so the window's mean colour is the blend of its mean weight); each palette then costs one
    Lab conversion for all colours together.
    """

    def __init__(self, weights: list[np.ndarray], means: list[np.ndarray], colours: list[np.ndarray]) -> None:
        self.bounds = np.cumsum([0, *(len(w) for w in weights)])
        channels = max(w.shape[-1] for w in weights)  # a one-channel pattern blends all channels alike
        self.weights = np.concatenate(
            [np.broadcast_to(w, (len(w), channels)) for w in [*weights, np.stack(means)]]
        )
        self.colours = srgb_to_lab(np.stack(colours))

    def passes(self, palette: tuple[np.ndarray, np.ndarray], count: int) -> bool:
        """Whether the first ``count`` colours all stand out under ``palette``."""
        lab = srgb_to_lab(blend(self.weights, palette))
        means = lab[self.bounds[-1] :]
        for i in range(count):
            if np.sqrt(((means[i] - self.colours[i]) ** 2).sum()) < MIN_CONTRAST:
                return False
            pixels = lab[self.bounds[i] : self.bounds[i + 1]]
            distance = np.sqrt(((pixels - self.colours[i]) ** 2).sum(-1))
            tenth = len(distance) // 10
            if np.partition(distance, tenth)[tenth] < MIN_PIXEL_CONTRAST:
                return False
        return True


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in [-0.5, 0.5] (x as a row, y as a column: broadcasting makes the image)."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    return axis[None, :], axis[:, None]


@lru_cache(maxsize=32)
def _upsampler(size: int, cells: int) -> np.ndarray:
    """(size x cells) smooth (cosine-weighted) interpolation from a coarse grid of cell values."""
    pos = (np.arange(size) + 0.5) / size * (cells - 1)
    lo = np.minimum(pos.astype(int), cells - 2)
    w = (1 - np.cos(np.pi * (pos - lo))) / 2
    out = np.zeros((size, cells), dtype=np.float32)
    out[np.arange(size), lo] = 1 - w
    out[np.arange(size), lo + 1] = w
    return out


def _sharpen(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A wave in [-1, 1] to a pattern in [0, 1], from soft (sinusoidal) to hard-edged."""
    return np.clip(0.5 + wave * np.float32(rng.choice([0.5, 1.5, 8.0])), 0, 1)


def _one_over_f(size: int, rng: np.random.Generator) -> np.ndarray:
    """Photo-like texture: 1/f^beta noise, a luminance field plus a chroma field with random channel weights.

    The noise is drawn directly in the frequency domain (one inverse FFT per field, no forward FFT).
    """
    radius = np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.rfftfreq(size)[None, :] ** 2)
    amplitude = (1 / np.maximum(radius, 1 / size) ** rng.uniform(0.9, 1.6)).astype(np.float32)
    shape = (2, size, size // 2 + 1)
    spectrum = rng.standard_normal(shape, dtype=np.float32) + 1j * rng.standard_normal(
        shape, dtype=np.float32
    )
    fields = np.fft.irfft2(spectrum * amplitude, s=(size, size)).astype(np.float32)
    share = np.float32(rng.uniform(0.6, 0.95))
    weights = rng.uniform(-1, 1, 3).astype(np.float32) * (1 - share)
    mixed = share * fields[0][..., None] + fields[1][..., None] * weights
    lo, hi = mixed.min(), mixed.max()
    return (mixed - lo) / np.float32(max(hi - lo, 1e-6))


def pattern(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """The blend weight between the two palette colours: (H, W, 1) or (H, W, 3) float32 in [0, 1]."""
    x, y = _grid(size)
    theta = rng.uniform(0, 2 * np.pi)
    along, across = np.cos(theta) * x + np.sin(theta) * y, np.cos(theta) * y - np.sin(theta) * x
    if kind in FLAT_LIGHTNESS:
        return np.zeros((1, 1, 1), dtype=np.float32)
    if kind == "linear":
        t = np.clip(0.5 + along * np.float32(rng.uniform(0.8, 1.6)), 0, 1)
    elif kind == "radial":
        cx, cy = rng.uniform(-0.35, 0.35, 2)
        t = np.clip(np.sqrt((x - cx) ** 2 + (y - cy) ** 2) / np.float32(rng.uniform(0.4, 0.9)), 0, 1)
    elif kind == "blobs":
        cells = int(rng.integers(3, 7))
        up = _upsampler(size, cells)
        coarse = rng.random((cells, cells, 3 if rng.random() < 0.5 else 1), dtype=np.float32)
        return np.moveaxis(up @ np.moveaxis(coarse, -1, 0) @ up.T, 0, -1)
    elif kind == "stripes":
        freq = rng.uniform(2, 9)
        t = _sharpen(np.sin(np.float32(2 * np.pi * freq) * along + np.float32(rng.uniform(0, 6.3))), rng)
    elif kind == "checks":
        freq, phase = np.float32(2 * np.pi * rng.uniform(1.5, 6)), rng.uniform(0, 6.3, 2).astype(np.float32)
        t = _sharpen(np.sin(freq * along + phase[0]) * np.sin(freq * across + phase[1]), rng)
    elif kind == "photo":
        return _one_over_f(size, rng)
    else:
        raise ValueError(f"unknown background kind {kind!r}; use one of {BACKGROUNDS}")
    return t.astype(np.float32)[..., None]


def random_colour(
    rng: np.random.Generator, vivid: bool, lightness: tuple[float, float] | None = None
) -> np.ndarray:
    """Any hue; saturation mostly low-to-mid, sometimes (always if ``vivid``) high; any brightness, or a
    CIELAB lightness drawn from ``lightness``."""
    band = 2 if vivid else int(np.searchsorted((0.4, 0.75), rng.random(), side="right"))
    saturation = rng.uniform(*((0.0, 0.15), (0.15, 0.6), (0.6, 1.0))[band])
    rgb = np.asarray(colorsys.hsv_to_rgb(rng.random(), saturation, rng.uniform(0.02, 1.0)), dtype=np.float32)
    if lightness is not None:
        rgb = with_lightness(rgb, rng.uniform(*lightness))
    return rgb * np.float32(255)


def with_lightness(rgb: np.ndarray, lightness: float) -> np.ndarray:
    """``rgb`` (in [0, 1]) moved to CIELAB ``lightness``: darkened by scaling light, lightened by adding
    white, both in linear light, where luminance is linear (so the result's lightness is exact)."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    luminance = float(linear @ _XYZ[1])
    f = (lightness + 16) / 116
    target = f**3 if f > 6 / 29 else 3 * (6 / 29) ** 2 * (f - 4 / 29)
    if luminance > target:
        linear = linear * (target / luminance)
    else:
        linear = linear + (target - luminance) / (1 - luminance) * (1 - linear)
    srgb = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * np.power(linear, 1 / 2.4) - 0.055)
    return np.clip(srgb, 0, 1).astype(np.float32)


def palette(kind: str, rng: np.random.Generator, vivid: bool) -> tuple[np.ndarray, np.ndarray]:
    """Two colours to blend; flat kinds use one colour in their lightness band."""
    if kind in FLAT_LIGHTNESS:
        colour = random_colour(rng, vivid, FLAT_LIGHTNESS[kind])
        return colour, colour
    first = random_colour(rng, vivid)
    if rng.random() < 0.5:  # a related second colour: same hue family, other lightness
        second = np.clip(first * np.float32(rng.uniform(0.3, 1.8)) + rng.uniform(-25, 25, 3), 0, 255)
        return first, second.astype(np.float32)
    return first, random_colour(rng, vivid)


def fallback_palette(kind: str, rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A palette that passes for ``rgb`` when random ones did not, keeping the kind's look.

    Flat kinds pick among vivid and neutral colours of their lightness band; patterned kinds among pairs
    of greys 25 levels apart whose whole range stands out (every blend of the two lies between them). A
    random passing candidate keeps variety (white on a light background needs this two times in three);
    if none passes (black on the darkest flat background can), the most distant one is used.
    """
    target = srgb_to_lab(rgb)
    if kind in FLAT_LIGHTNESS:
        colours, lab = _band_colours(kind)
        distance = np.sqrt(((lab - target) ** 2).sum(-1))
        pick = _choose(distance >= MIN_CONTRAST, distance, rng)
        return colours[pick], colours[pick]
    levels, lab = _grey_pairs()
    distance = np.sqrt(((lab - target) ** 2).sum(-1)).min(-1)  # the nearer end of each pair
    straddles = (lab[:, 0, 0] <= target[0]) & (target[0] <= lab[:, 1, 0])
    pick = _choose((distance >= MIN_CONTRAST) & ~straddles, distance, rng)
    return np.full(3, levels[pick], np.float32), np.full(3, levels[pick] + 25, np.float32)


def _choose(ok: np.ndarray, score: np.ndarray, rng: np.random.Generator) -> int:
    return int(rng.choice(np.flatnonzero(ok))) if ok.any() else int(np.argmax(score))


@lru_cache(maxsize=len(FLAT_LIGHTNESS))
def _band_colours(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Candidates (and their Lab) across a flat kind's band: 12 hues x 3 saturations x 4 lightnesses."""
    low, high = FLAT_LIGHTNESS[kind]
    hues = [np.asarray(colorsys.hsv_to_rgb(h / 12, s, 1.0)) for h in range(12) for s in (0.0, 0.5, 1.0)]
    colours = [with_lightness(rgb, lightness) for rgb in hues for lightness in np.linspace(low, high, 4)]
    rgb = np.asarray(colours, dtype=np.float32) * np.float32(255)
    return rgb, srgb_to_lab(rgb)


@lru_cache(maxsize=1)
def _grey_pairs() -> tuple[np.ndarray, np.ndarray]:
    """Darker grey levels 0, 10, ..., 230 of (level, level + 25) pairs, and the pairs' Lab (N x 2 x 3)."""
    levels = np.arange(0, 231, 10, dtype=np.float32)
    pairs = np.stack([levels, levels + 25], axis=1)[..., None].repeat(3, axis=-1)
    return levels, srgb_to_lab(pairs)


def blend(t: np.ndarray, colours: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    first, second = colours
    return first + t * (second - first)
