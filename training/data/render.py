"""Synthetic world version 2, part two: the pixels of a :class:`~training.data.scenes.Scene`.

Background pattern, then a palette that passes the contrast rule (:mod:`.backgrounds`), shapes from their
signed distances (:mod:`.shape_sdf`) composited in depth order under an occlusion budget, then blur, noise
and JPEG. Everything random here comes from a generator of its own, seeded by the scene's key.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from training.data import backgrounds as bg
from training.data.scenes import Item, Scene
from training.data.shape_sdf import bar_alpha, shape_alpha
from training.data.vocabulary import COLOUR_RGB_V2

MAX_OCCLUSION = 0.3  # the most of the target that distractors and bars may hide together
_PALETTE_TRIES = 8


@dataclass
class Drawing:
    """A rendered scene with the layers tests and reviews need (pixels as float32 in [0, 255])."""

    image: Image.Image
    clean: np.ndarray  # composite before blur, noise and JPEG
    background: np.ndarray
    target_alpha: np.ndarray  # the target's coverage over the whole image
    visible: np.ndarray  # target coverage left after occluders
    target_rgb: np.ndarray
    window: tuple[slice, slice]  # the target's bounding window (where contrast is measured)
    jpeg_quality: int  # 0: not compressed
    fallback: bool  # no random palette passed: backgrounds.fallback_palette chose it


def draw(scene: Scene, size: int) -> Drawing:
    """Pixels of ``scene`` at ``size`` x ``size``: background, layers in depth order, degradations."""
    rng = np.random.default_rng([*scene.key, 11])
    softness = 0.0 if rng.random() < 0.25 else rng.uniform(0.6, 1.6)
    t = bg.pattern(scene.background, size, rng)  # (H, W, 1 or 3), or (1, 1, 1) for flat kinds

    def layer(item: Item) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
        radius = item.scale * size / 2
        stroke = max(1.0, item.stroke * radius) if item.fill else 0.0
        centre = (item.centre[0] * size, item.centre[1] * size)
        window, alpha = shape_alpha(
            item.shape, size, centre, radius, item.angle, item.detail, stroke, softness
        )
        return window, alpha, _jitter(item.colour, rng)

    target = layer(scene.target)
    extras = [layer(d) for d in scene.distractors]
    colours, fallback = _choose_palette(scene.background, t, [target, *extras], rng)
    pixels = np.empty((size, size, 3), dtype=np.float32)
    pixels[...] = bg.blend(t, colours)
    background = pixels.copy()

    window, alpha, rgb = target
    budget = _Budget(size, window, alpha)
    front = []
    for item, (win, cover, colour) in zip(scene.distractors, extras, strict=True):
        if item.front and budget.take(win, cover):
            front.append((win, cover, colour))
        else:
            _paint(pixels, win, cover, colour)
    _paint(pixels, window, alpha, rgb)
    for win, cover, colour in front:
        _paint(pixels, win, cover, colour)
    if scene.bar is not None:
        _draw_bar(pixels, budget, scene, size, softness, rng)
    clean = pixels.copy()
    quality = int(rng.integers(30, 96)) if scene.jpeg else 0
    image = _degrade(pixels, size, quality, rng)
    return Drawing(image, clean, background, budget.target, budget.visible, rgb, window, quality, fallback)


def _jitter(colour: int, rng: np.random.Generator) -> np.ndarray:
    jittered = np.asarray(COLOUR_RGB_V2[colour], np.float32) + rng.uniform(-12, 12, 3).astype(np.float32)
    return np.minimum(np.maximum(jittered, 0), 255)


def _choose_palette(
    kind: str,
    t: np.ndarray,
    layers: list[tuple[tuple[slice, slice], np.ndarray, np.ndarray]],
    rng: np.random.Generator,
) -> tuple[tuple[np.ndarray, np.ndarray], bool]:
    """The first palette under which the target (and, in the first tries, the distractors) stand out.

    Later tries draw vivid colours only, which separates even white from a light background by hue; if
    all fail, :func:`backgrounds.fallback_palette` picks one that passes for the target.
    """
    if t.shape[0] == 1:  # flat: one colour everywhere
        shown = [(t, rgb) for _, alpha, rgb in layers if alpha.size]
    else:
        shown = [(t[win], rgb) for win, alpha, rgb in layers if alpha.size]  # the target's is never empty
    check = bg.ContrastCheck(
        [_thin(w).reshape(-1, w.shape[-1]) for w, _ in shown],
        [w.mean((0, 1)) for w, _ in shown],
        [rgb for _, rgb in shown],
    )
    for attempt in range(_PALETTE_TRIES):
        colours = bg.palette(kind, rng, vivid=attempt >= _PALETTE_TRIES // 2)
        if check.passes(colours, len(shown) if attempt < _PALETTE_TRIES // 2 else 1):
            return colours, False
    return bg.fallback_palette(kind, layers[0][2], rng), True


def _thin(region: np.ndarray) -> np.ndarray:
    """At most ~144 pixels of a window, evenly strided: plenty for a mean and a percentile."""
    step = max(1, int(np.ceil(np.sqrt(region.shape[0] * region.shape[1] / 144))))
    return region[::step, ::step]


def _paint(pixels: np.ndarray, window: tuple[slice, slice], alpha: np.ndarray, rgb: np.ndarray) -> None:
    region = pixels[window]
    region += alpha[..., None] * (rgb - region)


class _Budget:
    """How much of the target is still visible; occluders are taken while at most MAX_OCCLUSION is hidden."""

    def __init__(self, size: int, window: tuple[slice, slice], alpha: np.ndarray) -> None:
        self.target = np.zeros((size, size), dtype=np.float32)
        self.target[window] = alpha
        self.visible = self.target.copy()
        self.total = max(float(self.target.sum()), 1e-6)

    def take(self, window: tuple[slice, slice], cover: np.ndarray) -> bool:
        """Occlude by ``cover`` (over ``window``) if the budget allows it; whether it did."""
        region = self.visible[window]
        after = region * (1 - cover)
        if (
            1 - (float(self.visible.sum()) - float(region.sum()) + float(after.sum())) / self.total
            > MAX_OCCLUSION
        ):
            return False
        self.visible[window] = after
        return True


def _draw_bar(
    pixels: np.ndarray, budget: _Budget, scene: Scene, size: int, softness: float, rng: np.random.Generator
) -> None:
    """A straight bar past the target's edge, moved outwards until it hides at most MAX_OCCLUSION."""
    bar, target = scene.bar, scene.target
    assert bar is not None
    radius, everywhere = target.scale * size / 2, (slice(0, size), slice(0, size))
    normal = np.array([np.cos(bar.direction), np.sin(bar.direction)])
    colour = _jitter(bar.colour, rng)
    for step in range(4):
        x, y = np.multiply(target.centre, size) + normal * radius * (bar.offset + 0.2 * step)
        cover = bar_alpha(
            size, (float(x), float(y)), bar.direction + np.pi / 2, bar.half_width * size, softness
        )
        if budget.take(everywhere, cover):
            _paint(pixels, everywhere, cover, colour)
            return


def _degrade(pixels: np.ndarray, size: int, quality: int, rng: np.random.Generator) -> Image.Image:
    """Blur (25%), sensor noise (70%) and JPEG at ``quality`` (0: none).

    The noise is uniform with the drawn standard deviation (1-10 levels): at that strength it looks the
    same as Gaussian noise and costs a third as much to draw.
    """
    if rng.random() < 0.25:
        image = _to_image(pixels)
        pixels = np.asarray(image.filter(_gaussian(rng.uniform(0.3, 1.0) * size / 64)), dtype=np.float32)
    if rng.random() < 0.7:
        spread = np.float32(rng.uniform(1, 10) * np.sqrt(12))
        pixels = pixels + (rng.random((size, size, 3), dtype=np.float32) - np.float32(0.5)) * spread
    image = _to_image(pixels)
    if quality:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        image = Image.open(buffer, formats=("JPEG",))
        image.load()
    return image


def _gaussian(sigma: float) -> ImageFilter.Kernel:
    """A 5 x 5 Gaussian kernel (PIL's GaussianBlur costs ~10x more on images this small)."""
    taps = np.exp(-0.5 * (np.arange(-2, 3) / sigma) ** 2)
    weights = np.outer(taps, taps) / np.outer(taps, taps).sum()
    return ImageFilter.Kernel((5, 5), weights.ravel().tolist(), scale=1)


def _to_image(pixels: np.ndarray) -> Image.Image:
    """Float pixels to an 8-bit RGB image (``frombytes`` costs a fraction of ``fromarray`` at this size)."""
    levels = np.clip(pixels, 0, 255).astype(np.uint8)
    return Image.frombytes("RGB", (levels.shape[1], levels.shape[0]), levels.tobytes())
