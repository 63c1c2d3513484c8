"""A second, independent renderer of coloured shapes: an out-of-distribution test set for the demo world.

The training world (:mod:`training.data.synthetic`) draws PIL polygons at 3-4x and LANCZOS-downsamples
them onto dark-to-mid, low-saturation, noisy backgrounds. A model can score 99.8% there and still have
learnt that renderer's quirks. This one shares only the vocabulary (``SHAPES``, ``COLOURS``) and differs in
everything else, so its score cannot be flattered by them:

- **Drawing code**: matplotlib's Agg rasteriser with ``matplotlib.patches`` (exact curves, analytic
  anti-aliasing at the output resolution, no supersampling), not PIL's ``ImageDraw``. matplotlib is already
  a training dependency; scikit-image is a dev-only one.
- **Geometry**: its own outlines (a heart from a square and two half-discs, a crescent cut by an offset
  circle, stars and crosses of varying thickness, matplotlib's ``Annulus``/``RegularPolygon``/``Circle``).
- **Colours**: CSS / matplotlib named colours close to each colour word, not the training RGB table; clean
  flat fills (no noise, no jitter), sometimes with a darker outline.
- **Backgrounds**: light (white, off-white, light grey, pastel) and dark (black, charcoal, navy), plain
  or with a gentle gradient between two of the same family; half of each class's images are light.

All 64 ``"{colour} {shape}"`` classes are drawn, so the set is scored among the same 64 classes as the
model's own evaluation. Every image is a pure function of ``(seed, class, index)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from matplotlib import colors as mcolors
from matplotlib import patches
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from training.data.synthetic import COLOURS, SHAPES  # the vocabulary only: no drawing code is shared

# Bump when drawing, colours or sampling change: a set written before is then a different set.
RENDERER_VERSION = 1
DEFAULT_SIZE = 128

# Named colours (CSS / matplotlib "tab:") close to each colour word; one is picked per image.
COLOUR_NAMES: dict[str, tuple[str, ...]] = {
    "red": ("red", "tab:red", "firebrick"),
    "orange": ("darkorange", "orange", "tab:orange"),
    "yellow": ("yellow", "gold"),
    "green": ("green", "limegreen", "tab:green"),
    "cyan": ("cyan", "darkturquoise", "turquoise"),
    "blue": ("blue", "royalblue", "mediumblue"),
    "purple": ("darkviolet", "blueviolet", "rebeccapurple"),
    "pink": ("hotpink", "deeppink", "palevioletred"),
}
# A gradient runs between two colours of one family (halfway), so a background never leaves its family.
LIGHT_BACKGROUNDS: tuple[str, ...] = (
    *("white", "ivory", "whitesmoke", "floralwhite"),  # white and off-white
    *("lightgrey", "gainsboro"),  # light grey
    *("lavender", "honeydew", "aliceblue", "mistyrose", "lemonchiffon"),  # pastel
)
DARK_BACKGROUNDS: tuple[str, ...] = ("black", "#36454f", "#2a2a2a", "navy", "midnightblue")  # hex: charcoals

_MAX_TILT = math.radians(30)  # squares, crosses, hearts and triangles keep their identity
_GRADIENT_REACH = 0.5  # a gradient goes halfway from one family colour to another: gentle
# Shapes stay within this of the border (image widths; outlines reach at most 0.011 further): the
# outermost pixels are always background.
_MARGIN = 0.04


@dataclass(frozen=True)
class Drawing:
    """Everything one image is drawn from (coordinates in image widths, y up)."""

    shape: str
    colour: str
    fill: str  # a matplotlib colour name
    outline: float  # outline width in image widths; 0 for none
    centre: tuple[float, float]
    radius: float
    angle: float  # radians
    detail: float  # shape-specific proportion in [0, 1): star depth, cross and ring thickness, crescent bite
    background: tuple[str, str]  # gradient end colours; equal for a plain background
    gradient_angle: float
    light: bool

    @property
    def label(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class OodImage:
    image: Image.Image
    drawing: Drawing

    @property
    def label(self) -> str:
        return self.drawing.label

    @property
    def light(self) -> bool:
        return self.drawing.light


def class_names() -> list[str]:
    """The 64 class texts, ``"{colour} {shape}"``, shape-major as the training world lists them."""
    check_vocabulary()
    return [f"{c} {s}" for s in SHAPES for c in COLOURS]


# ------------------------------------------------------------------------------------------- geometry


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    cos, sin = math.cos(angle), math.sin(angle)
    return points @ np.array([[cos, sin], [-sin, cos]])


def _star(depth: float) -> np.ndarray:
    """Five points up; inner radius 0.36-0.52 of the outer."""
    k = np.arange(10)
    theta = math.pi / 2 + k * math.pi / 5
    r = np.where(k % 2 == 0, 1.0, 0.36 + 0.16 * depth)
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)


def _cross(thickness: float) -> np.ndarray:
    """A plus sign; arm half-width 0.2-0.34 of the arm length."""
    w = 0.2 + 0.14 * thickness
    quarter = np.array([(w, 1.0), (w, w), (1.0, w)]) / math.hypot(1.0, w)  # arm corners on the unit circle
    return np.concatenate([_rotate(quarter, -turn * math.pi / 2) for turn in range(4)])


@lru_cache(maxsize=1)
def _heart() -> np.ndarray:
    """A square on its corner with a half-disc on each upper side, tip down, scaled into the unit disc
    (every outline lies within it, so a shape of radius r never reaches further than r from its centre)."""
    a, r = 1.0, math.sqrt(2) / 2
    left = np.linspace(5 * math.pi / 4, math.pi / 4, 40)  # from the left corner over to the top one
    right = np.linspace(3 * math.pi / 4, -math.pi / 4, 40)  # from the top corner over to the right one
    outline = np.concatenate(
        [
            [(0.0, -a)],
            np.stack([-a / 2 + r * np.cos(left), a / 2 + r * np.sin(left)], 1),
            np.stack([a / 2 + r * np.cos(right), a / 2 + r * np.sin(right)], 1),
        ]
    )
    outline[:, 1] -= (a / 2 + r - a) / 2  # centre vertically
    return outline / np.linalg.norm(outline, axis=1).max()


def _crescent(bite: float) -> np.ndarray:
    """The unit disc minus a disc of radius 0.8-0.9 shifted right by 0.42-0.56: horns point right."""
    r2, d = 0.8 + 0.1 * bite, 0.42 + 0.14 * bite
    x = (1 + d * d - r2 * r2) / (2 * d)
    top = math.atan2(math.sqrt(1 - x * x), x)
    inner_top = math.atan2(math.sqrt(1 - x * x), x - d)
    outer = np.linspace(top, 2 * math.pi - top, 64)
    inner = np.linspace(2 * math.pi - inner_top, inner_top, 48)
    return np.concatenate(
        [
            np.stack([np.cos(outer), np.sin(outer)], 1),
            np.stack([d + r2 * np.cos(inner), r2 * np.sin(inner)], 1),
        ]
    )


def _patch(d: Drawing) -> patches.Patch:
    style = {
        "facecolor": d.fill,
        "edgecolor": _darker(d.fill) if d.outline else "none",
        # linewidth is in points; the figure is 1 inch wide, so one image width is 72 points
        "linewidth": 72 * d.outline,
        "joinstyle": "round",
    }
    if d.shape == "circle":
        return patches.Circle(d.centre, d.radius, **style)
    if d.shape == "ring":
        return patches.Annulus(d.centre, d.radius, d.radius * (0.35 + 0.15 * d.detail), **style)
    if d.shape in ("square", "triangle"):
        sides, turn = (4, math.pi / 4) if d.shape == "square" else (3, 0.0)
        return patches.RegularPolygon(d.centre, sides, radius=d.radius, orientation=turn + d.angle, **style)
    outline = _OUTLINES[d.shape](d.detail)
    return patches.Polygon(_rotate(outline, d.angle) * d.radius + d.centre, closed=True, **style)


_PATCH_SHAPES = ("circle", "ring", "square", "triangle")  # matplotlib's own patches
_OUTLINES: dict[str, Callable[[float], np.ndarray]] = {
    "star": _star,
    "cross": _cross,
    "crescent": _crescent,
    "heart": lambda _: _heart(),
}


def check_vocabulary() -> None:
    """Refuse, naming them, the world's shapes or colours this renderer has no drawing or colour for."""
    missing = [s for s in SHAPES if s not in _PATCH_SHAPES and s not in _OUTLINES]
    missing += [c for c in COLOURS if c not in COLOUR_NAMES]
    if missing:
        raise ValueError(
            f"the second renderer cannot draw {', '.join(map(repr, missing))} of the training world's "
            "vocabulary: add them to training/data/second_renderer.py (_OUTLINES / COLOUR_NAMES)"
        )


def _darker(colour: str) -> tuple[float, float, float]:
    r, g, b = mcolors.to_rgb(colour)
    return (0.55 * r, 0.55 * g, 0.55 * b)


# ------------------------------------------------------------------------------------------- sampling


def draw_spec(label: int, index: int, seed: int = 0) -> Drawing:
    """What image ``index`` of class ``label`` (an index into :func:`class_names`) shows; light
    and dark backgrounds alternate, so each class is half light, half dark."""
    check_vocabulary()
    rng = np.random.default_rng([RENDERER_VERSION, seed, label, index])
    shape, colour = SHAPES[label // len(COLOURS)], COLOURS[label % len(COLOURS)]
    light = (label + index) % 2 == 0
    family: tuple[str, ...] = LIGHT_BACKGROUNDS if light else DARK_BACKGROUNDS
    first = family[int(rng.integers(len(family)))]
    others = [colour for colour in family if colour != first]
    second = first if rng.random() < 0.5 else others[int(rng.integers(len(others)))]
    radius = float(rng.uniform(0.2, 0.38))
    lo, hi = radius + _MARGIN, 1 - radius - _MARGIN
    angle = float(rng.uniform(0, 2 * math.pi) if shape == "crescent" else rng.uniform(-_MAX_TILT, _MAX_TILT))
    return Drawing(
        shape=shape,
        colour=colour,
        fill=COLOUR_NAMES[colour][int(rng.integers(len(COLOUR_NAMES[colour])))],
        outline=float(rng.uniform(0.01, 0.022)) if rng.random() < 0.35 else 0.0,
        centre=(float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))),
        radius=radius,
        angle=angle,
        detail=float(rng.random()),
        background=(first, second),
        gradient_angle=float(rng.uniform(0, 2 * math.pi)),
        light=light,
    )


# ------------------------------------------------------------------------------------------ rendering


def _gradient(start: str, end: str, angle: float, size: int) -> np.ndarray:
    """(size, size, 3) linear ramp from ``start`` halfway to ``end`` along ``angle``, row 0 at the bottom."""
    axis = (np.arange(size) + 0.5) / size - 0.5
    xs, ys = np.meshgrid(axis, axis)
    t = np.clip((math.cos(angle) * xs + math.sin(angle) * ys) / math.sqrt(0.5) + 0.5, 0, 1)[..., None]
    a, b = np.array(mcolors.to_rgb(start)), np.array(mcolors.to_rgb(end))
    return a + t * _GRADIENT_REACH * (b - a)


def _draw(d: Drawing, size: int, mask: bool) -> np.ndarray:
    """Agg-render ``d`` on a bare 1-inch figure at ``size`` dpi: patches in figure coordinates (no Axes,
    which would cost three quarters of the time), a gradient as a pixel-exact ``figimage``."""
    fig = Figure(figsize=(1, 1), dpi=size)
    canvas = FigureCanvasAgg(fig)
    if mask:
        fig.set_facecolor("black")
        patch = _patch(replace(d, fill="white", outline=0.0))
    else:
        start, end = d.background
        fig.set_facecolor(start)
        if start != end:
            fig.figimage(_gradient(start, end, d.gradient_angle, size), origin="lower")
        patch = _patch(d)
    patch.set_transform(fig.transFigure)
    fig.add_artist(patch)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    assert pixels.shape[:2] == (size, size), pixels.shape
    return pixels


def render(d: Drawing, size: int = DEFAULT_SIZE) -> Image.Image:
    """The RGB image of ``d``, ``size`` pixels square."""
    return Image.fromarray(_draw(d, size, mask=False), "RGB")


def coverage(d: Drawing, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Where the shape is: (size, size) float in [0, 1] (its fill, without outline), for checks."""
    return _draw(d, size, mask=True)[..., 0].astype(np.float32) / 255


def render_set(per_class: int = 20, seed: int = 0, size: int = DEFAULT_SIZE) -> Iterator[OodImage]:
    """``per_class`` images of each of the 64 classes, class by class."""
    if per_class < 1 or size < 16:
        raise ValueError(f"need per_class >= 1 and size >= 16, got {per_class} and {size}")
    for label in range(len(SHAPES) * len(COLOURS)):
        for index in range(per_class):
            d = draw_spec(label, index, seed)
            yield OodImage(render(d, size), d)


def write_set(out: Path, per_class: int = 20, seed: int = 0, size: int = DEFAULT_SIZE) -> int:
    """Write the set as ``out/<class text>/<index>-<light|dark>.png`` (a labelled folder that
    ``LabelledSet.read`` takes), plus ``ood_set.json`` recording how it was made. Returns the image count."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty: give a new folder")
    count = 0
    for index, item in enumerate(render_set(per_class, seed, size)):
        folder = out / item.label
        folder.mkdir(parents=True, exist_ok=True)
        item.image.save(folder / f"{index % per_class:04d}-{'light' if item.light else 'dark'}.png")
        count += 1
    record = {
        "renderer": "training.data.second_renderer",
        "version": RENDERER_VERSION,
        "seed": seed,
        "per_class": per_class,
        "size": size,
        "classes": len(SHAPES) * len(COLOURS),
        "images": count,
    }
    (out / "ood_set.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return count
