"""A deterministic synthetic world of coloured shapes standing in for web pairs and for ImageNet.

The demo must train on two CPU cores in minutes and still test the thing LiT is about: zero-shot
transfer. So the world has 8 shapes x 8 colours = 64 classes, a quarter of which never appear in the
text-tuning split (``"lit"``) but are scored by zero-shot evaluation (``"eval"``). Images are clean
enough to learn at 64x64, with real nuisance factors (size, position, rotation, background, colour
jitter, noise); captions vary wording and synonyms so the text tower has to learn language, not ids.

Everything is a pure function of ``(seed, split, index)``: no files, no state, any worker can render
any sample.

``SyntheticWorld(version=2)`` is a harder, wider world (12 x 12 classes, any background, outlines, clutter,
occlusion, JPEG; see :mod:`.vocabulary`, :mod:`.scenes` and :mod:`.render`) so that a model has to learn
shapes and colours rather than this world's look. Version 1 stays bit for bit what it was: the
committed demo model and its tests depend on it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageDraw

from lit_bundle.prompts import expand_prompts
from training.data import render, scenes, vocabulary

# The default world's version. Never change what a version renders: add a version instead (the fingerprint,
# the feature caches' key, includes it).
RENDER_VERSION = 1
RENDER_VERSIONS = (1, 2)

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring", "heart", "crescent")
COLOURS: tuple[str, ...] = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")

# Saturated, well separated base colours; the background is kept dark-to-mid and low-saturation so
# it can never be mistaken for one of them.
_COLOUR_RGB: tuple[tuple[int, int, int], ...] = (
    (220, 35, 35),
    (245, 135, 20),
    (240, 225, 40),
    (40, 180, 55),
    (40, 215, 225),
    (35, 75, 235),
    (145, 55, 205),
    (250, 130, 195),
)

# Canonical name first; it is chosen half of the time, the synonyms share the rest.
_SHAPE_WORDS: tuple[tuple[str, ...], ...] = (
    ("circle", "disc", "round dot"),
    ("square", "box", "block"),
    ("triangle", "triangular shape", "wedge"),
    ("star", "five-pointed star", "starburst"),
    ("cross", "plus sign", "plus"),
    ("ring", "donut", "hoop"),
    ("heart", "love heart", "heart shape"),
    ("crescent", "crescent moon", "sickle"),
)
_COLOUR_WORDS: tuple[tuple[str, ...], ...] = (
    ("red", "crimson", "scarlet"),
    ("orange", "tangerine", "amber"),
    ("yellow", "golden", "lemon"),
    ("green", "emerald", "grass green"),
    ("cyan", "turquoise", "aqua"),
    ("blue", "azure", "cobalt"),
    ("purple", "violet", "plum"),
    ("pink", "rose", "fuchsia"),
)

# The first four are the forms zero-shot evaluation uses as prompt templates with the canonical
# class name, so they must occur in training captions verbatim (article included: templates are
# filled with ``str.format``, which does not turn "a" into "an"); the others use a correct article.
_TEMPLATES: tuple[str, ...] = (
    "a photo of a {c} {s}.",
    "a {c} {s}.",
    "a picture of a {c} {s}.",
    "an image of a {c} {s}.",
    "{a} {c} {s}",
    "a {s} that is {c}",
    "{c} {s} on a grey background",
    "an image of a {s} coloured {c}.",
    "a drawing of {a} {c} {s}.",
    "this is a photo of {a} {c} {s}.",
    "a {s} in {c}.",
    "there is {a} {c} {s} in the picture",
)

Split = Literal["pretrain", "lit", "eval"]
_SPLIT_IDS: dict[str, int] = {"pretrain": 0, "lit": 1, "eval": 2}

_MAX_ROTATION = np.pi / 6  # +-30 degrees: a square stays a square, a cross stays a plus sign


@lru_cache(maxsize=1)
def _unit_outlines() -> dict[str, np.ndarray]:
    """Polygon outlines (N x 2, circumradius ~1, y down) of the shapes drawn as polygons."""
    star_angles = -np.pi / 2 + np.arange(10) * np.pi / 5
    star_radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
    tri_angles = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
    w = 0.3
    cross = [(w, 1), (w, w), (1, w), (1, -w), (w, -w), (w, -1)]
    cross += [(-x, -y) for x, y in cross]
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    heart_x = 16 * np.sin(t) ** 3
    heart_y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return {
        "square": np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], dtype=np.float64) * 0.78,
        "triangle": np.stack([np.cos(tri_angles), np.sin(tri_angles)], axis=1) * 1.05,
        "star": np.stack([np.cos(star_angles), np.sin(star_angles)], axis=1) * star_radii[:, None],
        "cross": np.array(cross, dtype=np.float64),
        "heart": np.stack([heart_x / 16.5, -(heart_y + 2.5) / 16.5], axis=1),
    }


@lru_cache(maxsize=8)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in [-0.5, 0.5] for background gradients."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    return np.meshgrid(axis, axis)


@dataclass(frozen=True)
class SyntheticWorld:
    """The (shape, colour) classes, which of them are held out, and how samples are drawn."""

    image_size: int = 64
    seed: int = 0
    version: int = RENDER_VERSION

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16, got {self.image_size}")
        if self.version not in RENDER_VERSIONS:
            raise ValueError(f"unknown synthetic world version {self.version}; use one of {RENDER_VERSIONS}")

    @property
    def shapes(self) -> tuple[str, ...]:
        return SHAPES if self.version == 1 else vocabulary.SHAPES_V2

    @property
    def colours(self) -> tuple[str, ...]:
        return COLOURS if self.version == 1 else vocabulary.COLOURS_V2

    @property
    def num_classes(self) -> int:
        return len(self.shapes) * len(self.colours)

    @property
    def class_names(self) -> list[str]:
        """``class_names[shape * len(colours) + colour] == "{colour} {shape}"``, e.g. ``"red circle"``."""
        return [f"{c} {s}" for s in self.shapes for c in self.colours]

    @property
    def heldout_classes(self) -> list[int]:
        """Combinations never shown to the text tower; every shape and colour is still seen.

        Version 1: 16 (two per shape), each colour seen 6x; version 2: 36 (three per shape and per colour).
        """
        if self.version == 2:
            return vocabulary.heldout_classes_v2()
        n = len(COLOURS)
        held = {s * n + s % n for s in range(len(SHAPES))} | {s * n + (s + 3) % n for s in range(len(SHAPES))}
        return sorted(held)

    @property
    def seen_classes(self) -> list[int]:
        held = set(self.heldout_classes)
        return [k for k in range(self.num_classes) if k not in held]

    # -- class assignment -------------------------------------------------------------------------

    def classes_for(self, split: Split, indices: np.ndarray) -> np.ndarray:
        """Class of each index, without rendering (a hash of ``(seed, split, index)``)."""
        split_id = _split_id(split)
        indices = np.asarray(indices, dtype=np.int64)
        if split == "eval":  # balanced: every class equally often
            return indices % self.num_classes
        if split == "pretrain":
            pool = np.arange(self.num_classes)
        else:
            pool = _V2_POOLS[True] if self.version == 2 else np.asarray(self.seen_classes)
        draws = scenes.hashes(self.seed, split_id, indices, slice(0, 1))[0]  # v1's formula, cached key
        return pool[(draws % np.uint64(len(pool))).astype(np.int64)]

    @property
    def heldout_words(self) -> dict[str, tuple[str, ...]]:
        """Canonical word -> synonyms only evaluation uses (never in "lit"/"pretrain" captions); v1: none."""
        return vocabulary.heldout_words_v2() if self.version == 2 else {}

    def heldout_word_class_names(self, part: Literal["shape", "colour", "both"] = "both") -> list[str]:
        """``class_names`` with the held-out synonym of the shape, the colour or both (held-out-word top-1).

        Scoring the "eval" split against these names instead of ``class_names`` measures whether the text
        tower maps words it never saw in training onto the right classes.
        """
        if self.version != 2:
            raise ValueError("held-out words exist in synthetic world version 2 only")
        held = self.heldout_words
        colours = [held[c][0] if part != "shape" else c for c in self.colours]
        return [f"{c} {held[s][0] if part != 'colour' else s}" for s in self.shapes for c in colours]

    def heldout_word_prompts(
        self, templates: list[str], part: Literal["shape", "colour", "both"] = "both"
    ) -> list[list[str]]:
        """Per class, the prompts ``templates`` make from its held-out-word name (label-major, like CLIP)."""
        prompts = expand_prompts(self.heldout_word_class_names(part), templates)
        return [prompts[i : i + len(templates)] for i in range(0, len(prompts), len(templates))]

    def factors(self, split: Split, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The factor labels each sample is drawn with, without rendering (for pretext tasks, sampling).

        Keys: ``class``, ``shape``, ``colour`` and, in version 2, ``fill`` (index into
        ``vocabulary.FILLS``), ``size`` (``SIZE_BUCKETS``), ``background`` (``BACKGROUNDS``), ``distractors``
        (count), ``named`` (the caption names them), ``jpeg``.
        """
        indices = np.asarray(indices, dtype=np.int64)
        labels = self.classes_for(split, indices).astype(np.int64)
        if self.version == 1:
            return {"class": labels, "shape": labels // len(COLOURS), "colour": labels % len(COLOURS)}
        return scenes.factor_labels(self.seed, _split_id(split), indices, labels)

    def scene(self, split: Split, index: int) -> scenes.Scene:
        """Version 2: the plan of one sample (geometry, distractors, caption), without pixels."""
        if self.version != 2:
            raise ValueError("scene plans exist in synthetic world version 2 only")
        split_id, index = _split_id(split), int(index)
        pool = _V2_POOLS[split == "lit"]
        if split == "eval":
            label = index % self.num_classes
        else:
            label = scenes.class_one(self.seed, split_id, index, pool)
        factors = scenes.factors_one(self.seed, split_id, index, label)
        return scenes.plan((self.seed, split_id, index), factors, pool, heldout_words=split == "eval")

    def captions(self, split: Split, indices: np.ndarray) -> list[str]:
        """Captions of ``indices``; version 2 draws them without rendering."""
        if self.version == 1:
            return [self.sample(split, int(i))[1] for i in np.asarray(indices)]
        return [self.scene(split, int(i)).caption for i in np.asarray(indices)]

    # -- sampling -------------------------------------------------------------------------------

    def sample(self, split: Split, index: int) -> tuple[Image.Image, str, int]:
        """``(image, caption, class)``, fully determined by ``(seed, split, index)``."""
        if self.version == 2:
            plan = self.scene(split, index)
            return render.draw(plan, self.image_size).image, plan.caption, plan.label
        label = int(self.classes_for(split, np.asarray([index]))[0])
        rng = np.random.default_rng([self.seed, _split_id(split), index])
        shape, colour = divmod(label, len(COLOURS))
        image = self.render(shape, colour, rng)
        return image, self.caption(shape, colour, rng), label

    def caption(self, shape: int, colour: int, rng: np.random.Generator) -> str:
        """Version 1: a varied caption; canonical words are picked half of the time, synonyms otherwise."""
        self._v1_only("caption")
        template = _TEMPLATES[rng.integers(len(_TEMPLATES))]
        c, s = _pick_word(_COLOUR_WORDS[colour], rng), _pick_word(_SHAPE_WORDS[shape], rng)
        return template.format(a="an" if c[0] in "aeiou" else "a", c=c, s=s)

    def render(self, shape: int, colour: int, rng: np.random.Generator) -> Image.Image:
        """Version 1: one RGB image, an anti-aliased shape mask composited over a noisy, tinted background."""
        self._v1_only("render")
        size = self.image_size
        alpha = _shape_mask(SHAPES[shape], size, rng)
        fg = np.clip(np.asarray(_COLOUR_RGB[colour], np.float32) + rng.uniform(-15, 15, 3), 0, 255)
        pixels = _background(size, rng)
        pixels += alpha[..., None] * (fg.astype(np.float32) - pixels)
        sigma = rng.uniform(1.0, 6.0)
        pixels += rng.standard_normal((size, size, 3), dtype=np.float32) * np.float32(sigma)
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")

    def _v1_only(self, name: str) -> None:
        if self.version != 1:
            raise ValueError(f"SyntheticWorld.{name} draws version 1; version 2 samples come from scene()")


# Classes distractors may take: all of them, or in "lit" only the seen ones (no held-out pair is ever shown).
_V2_POOLS = (
    np.arange(len(vocabulary.SHAPES_V2) * len(vocabulary.COLOURS_V2)),
    np.asarray(vocabulary.SEEN_V2),
)


def _split_id(split: str) -> int:
    try:
        return _SPLIT_IDS[split]
    except KeyError:
        raise ValueError(f"unknown synthetic split {split!r}; use one of {sorted(_SPLIT_IDS)}") from None


def _pick_word(words: tuple[str, ...], rng: np.random.Generator) -> str:
    if rng.random() < 0.5:
        return words[0]
    return words[1 + int(rng.integers(len(words) - 1))]


def _shape_mask(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Coverage in [0, 1] (H x W float32): drawn at 4x (3x above 48 px) and LANCZOS-downsampled."""
    factor = 4 if size <= 48 else 3
    big = size * factor
    radius = rng.uniform(0.35, 0.80) * big / 2
    cx, cy = rng.uniform(radius, big - radius, 2)
    angle = rng.uniform(-_MAX_ROTATION, _MAX_ROTATION)
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)

    def disc(x: float, y: float, r: float, fill: int) -> None:
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)

    if name == "circle":
        disc(cx, cy, radius, 255)
    elif name == "ring":
        disc(cx, cy, radius, 255)
        disc(cx, cy, radius * 0.55, 0)
    elif name == "crescent":
        disc(cx, cy, radius, 255)
        disc(cx + 0.45 * radius * np.cos(angle), cy + 0.45 * radius * np.sin(angle), radius * 0.85, 0)
    else:
        cos, sin = np.cos(angle), np.sin(angle)
        outline = _unit_outlines()[name] @ np.array([[cos, sin], [-sin, cos]]) * radius + (cx, cy)
        draw.polygon([tuple(p) for p in outline.tolist()], fill=255)
    small = mask.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(small, dtype=np.float32) * np.float32(1 / 255)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Dark-to-mid grey, optionally tinted (low saturation) and with a linear gradient."""
    base = rng.uniform(25, 130) + rng.uniform(-15, 15, 3) * (rng.random() < 0.5)
    pixels = np.empty((size, size, 3), dtype=np.float32)
    pixels[...] = base.astype(np.float32)
    if rng.random() < 0.5:
        xs, ys = _pixel_grid(size)
        theta = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(theta) * xs + np.sin(theta) * ys) * np.float32(rng.uniform(10, 40))
        pixels += ramp[..., None]
    return pixels


class SyntheticPairs(torch.utils.data.Dataset):
    """``size`` deterministic ``(pixels, caption)`` pairs from one split of a :class:`SyntheticWorld`.

    ``labels`` / ``shape_labels`` / ``colour_labels`` are known without rendering, so evaluation and
    balanced sampling never pay for images they do not need.
    """

    def __init__(
        self,
        world: SyntheticWorld,
        split: Split,
        size: int,
        transform: Callable[[Image.Image], torch.Tensor] | None = None,
    ) -> None:
        if size < 0:
            raise ValueError(f"size must be non-negative, got {size}")
        _split_id(split)
        self.world, self.split, self.size, self.transform = world, split, size, transform
        self.labels: np.ndarray = world.classes_for(split, np.arange(size)).astype(np.int64)
        self.shape_labels: np.ndarray = self.labels // len(world.colours)
        self.colour_labels: np.ndarray = self.labels % len(world.colours)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor | Image.Image, str]:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} synthetic samples")
        image, caption, _ = self.world.sample(self.split, int(index))
        return (self.transform(image) if self.transform is not None else image), caption

    def factor_labels(self) -> dict[str, np.ndarray]:
        """Every factor label of these samples (see :meth:`SyntheticWorld.factors`), without rendering."""
        return self.world.factors(self.split, np.arange(self.size))

    def fingerprint(self) -> str:
        """Stable id of exactly these samples (for feature caches); changes with the world's version."""
        spec = {
            "kind": "synthetic",
            "version": self.world.version,
            "image_size": self.world.image_size,
            "seed": self.world.seed,
            "split": self.split,
            "size": self.size,
        }
        if self.world.version == 2:
            spec["revision"] = scenes.REVISION
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
