"""Synthetic world version 2, part one: factor labels and the scene plan (the pixels: :mod:`.render`).

Three independent layers, so each costs only what it needs:

* factor labels (class, fill, size bucket, background kind, distractor count, whether the caption names
  the distractors, JPEG) are hashes of ``(seed, split, index)``, vectorised over indices: a pretext task or a
  balanced sampler reads them for a million samples without drawing anything;
* the plan (:class:`Scene`: geometry, distractor classes, the caption) comes from a generator seeded by
  ``(seed, split, index)`` and no pixels, so captions can be checked in bulk;
* pixels (background palette, colour jitter, anti-aliasing, blur, noise, JPEG quality) come from a second
  generator (:func:`training.data.render.draw`), so resampling a background for contrast never changes
  the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from training.data.shape_sdf import HALF_THICKNESS
from training.data.vocabulary import (
    BACKGROUNDS,
    COLOURS_V2,
    FILLS,
    PROMPT_FORMS,
    SHAPES_V2,
    SIZE_BUCKETS,
    SIZE_RANGES,
    SOLID_ONLY,
    TEMPLATES_V2,
    article,
    colour_words,
    shape_words,
)

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)
_STREAMS = {"fill": 1, "size": 2, "background": 3, "distractors": 4, "named": 5, "jpeg": 6}
# Bumped whenever version 2's plans or pixels change: feature caches of older renders then miss.
REVISION = 2
_DISTRACTOR_P = np.cumsum([0.45, 0.3, 0.15, 0.1])
DISTRACTOR_COUNTS = len(_DISTRACTOR_P)  # a scene has 0 to DISTRACTOR_COUNTS - 1 distractors
_SOLID_ONLY_MASK = np.isin(np.arange(len(SHAPES_V2)), sorted(SOLID_ONLY))


def splitmix64(x: np.ndarray) -> np.ndarray:
    """Vectorised SplitMix64 finaliser: a cheap, platform-independent hash of uint64 counters.

    uint64 arrays wrap silently; callers hashing NumPy scalars, which warn on overflow, silence it.
    """
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK
    return x ^ (x >> np.uint64(31))


@lru_cache(maxsize=64)
def stream_keys(seed: int, split_id: int) -> np.ndarray:
    """Hash keys of one (seed, split): row 0 draws the class (version 1's formula), the others the factors."""
    with np.errstate(over="ignore"):
        key = splitmix64(splitmix64(np.uint64(seed % 2**64)) ^ np.uint64(split_id))
    streams = np.arange(len(_STREAMS), dtype=np.uint64) + np.uint64(0x5EED0001)
    keys = np.concatenate([[key], splitmix64(key ^ streams)])
    keys.flags.writeable = False
    return keys


def hashes(seed: int, split_id: int, indices: np.ndarray, rows: slice = slice(None)) -> np.ndarray:
    """(streams x indices) uint64 hashes of ``(seed, split, index)``, a row per key of :func:`stream_keys`."""
    counters = splitmix64(np.asarray(indices, dtype=np.int64).astype(np.uint64))
    return splitmix64(stream_keys(seed, split_id)[rows, None] ^ counters[None, :])


def factor_labels(seed: int, split_id: int, indices: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Every factor label a sample is drawn with, from hashes only (no generator, no pixels)."""
    n_colours = len(COLOURS_V2)
    shape, colour = labels // n_colours, labels % n_colours

    uniform = (hashes(seed, split_id, indices, slice(1, None)) >> np.uint64(11)).astype(np.float64) * 2.0**-53

    def draw(name: str) -> np.ndarray:
        return uniform[_STREAMS[name] - 1]

    solid_only = _SOLID_ONLY_MASK[shape]
    size = np.minimum((draw("size") * len(SIZE_BUCKETS)).astype(np.int64), len(SIZE_BUCKETS) - 1)
    distractors = np.searchsorted(_DISTRACTOR_P, draw("distractors"), side="right").astype(np.int64)
    distractors = np.where(size == 2, np.minimum(distractors, 1), np.minimum(distractors, 3))
    return {
        "class": labels.astype(np.int64),
        "shape": shape.astype(np.int64),
        "colour": colour.astype(np.int64),
        "fill": ((draw("fill") < 0.35) & ~solid_only).astype(np.int64),
        "size": size,
        "background": np.minimum(
            (draw("background") * len(BACKGROUNDS)).astype(np.int64), len(BACKGROUNDS) - 1
        ),
        "distractors": distractors,
        "named": (distractors > 0) & (draw("named") < 0.5),
        "jpeg": draw("jpeg") < 0.35,
    }


def _mix(x: int) -> int:
    """SplitMix64 on one Python int: identical to :func:`splitmix64`, ~20x cheaper for a single value."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


@lru_cache(maxsize=64)
def _int_keys(seed: int, split_id: int) -> tuple[int, ...]:
    return tuple(int(k) for k in stream_keys(seed, split_id))


def class_one(seed: int, split_id: int, index: int, pool: np.ndarray) -> int:
    """The class one index draws from ``pool`` (what ``SyntheticWorld.classes_for`` computes in bulk)."""
    return int(pool[(_mix(_int_keys(seed, split_id)[0] ^ _mix(index & 0xFFFFFFFFFFFFFFFF))) % len(pool)])


def factors_one(seed: int, split_id: int, index: int, label: int) -> dict[str, int]:
    """:func:`factor_labels` of one index in plain Python (what planning one sample needs, at a fraction
    of the cost of NumPy calls on one-element arrays); tests hold the two to the same values."""
    counter = _mix(index & 0xFFFFFFFFFFFFFFFF)
    keys = _int_keys(seed, split_id)
    u = {name: (_mix(keys[row] ^ counter) >> 11) * 2.0**-53 for name, row in _STREAMS.items()}
    shape, colour = divmod(label, len(COLOURS_V2))
    size = min(int(u["size"] * len(SIZE_BUCKETS)), len(SIZE_BUCKETS) - 1)
    distractors = min(sum(bool(u["distractors"] >= p) for p in _DISTRACTOR_P), 1 if size == 2 else 3)
    return {
        "class": label,
        "shape": shape,
        "colour": colour,
        "fill": int(u["fill"] < 0.35 and shape not in SOLID_ONLY),
        "size": size,
        "background": min(int(u["background"] * len(BACKGROUNDS)), len(BACKGROUNDS) - 1),
        "distractors": distractors,
        "named": int(distractors > 0 and u["named"] < 0.5),
        "jpeg": int(u["jpeg"] < 0.35),
    }


@dataclass(frozen=True)
class Item:
    """One shape in the unit image (coordinates and scale as fractions of the side)."""

    shape: int
    colour: int
    fill: int
    scale: float  # circumdiameter / image side
    centre: tuple[float, float]
    angle: float
    detail: float
    stroke: float  # outline width as a fraction of the radius (0: filled); at least 1 px when drawn
    front: bool = True  # distractors: try to draw over the target (within the occlusion budget)


@dataclass(frozen=True)
class Bar:
    offset: float  # distance of the bar's axis from the target centre, in target radii
    direction: float  # angle of the offset; the bar runs perpendicular to it
    half_width: float  # fraction of the image side
    colour: int


@dataclass(frozen=True)
class Scene:
    """The plan of one sample: everything but pixel-level randomness."""

    key: tuple[int, int, int]  # (seed, split id, index): seeds the pixel generator
    label: int
    size_bucket: int
    background: str
    jpeg: bool
    named: bool
    target: Item
    distractors: tuple[Item, ...]
    bar: Bar | None
    caption: str


def plan(key: tuple[int, int, int], factors: dict[str, int], pool: np.ndarray, heldout_words: bool) -> Scene:
    """Geometry, distractors and caption of one sample; ``pool`` holds the classes distractors may take."""
    rng = np.random.default_rng([*key, 7])
    shape, colour, size = factors["shape"], factors["colour"], factors["size"]
    scale = rng.uniform(*SIZE_RANGES[size])
    target = _item(rng, shape, colour, factors["fill"], scale, _position(rng, scale / 2, rng.random() < 0.2))
    candidates = pool[(pool // len(COLOURS_V2) != shape) & (pool % len(COLOURS_V2) != colour)]
    distractors = []
    for _ in range(factors["distractors"]):
        other = int(candidates[rng.integers(len(candidates))])
        d_shape, d_colour = divmod(other, len(COLOURS_V2))
        # At most 0.55x the target: the subject is always clearly the largest shape in the picture.
        d_scale = min(max(scale * rng.uniform(0.25, 0.5), 0.1), 0.55 * scale)
        if rng.random() < 0.25:  # on the target's edge: occludes it if drawn in front
            angle, reach = rng.uniform(0, 2 * np.pi), scale / 2 * rng.uniform(0.7, 1.1)
            where = tuple(
                np.clip(np.add(target.centre, reach * np.array([np.cos(angle), np.sin(angle)])), 0, 1)
            )
        else:  # the clearest of four random spots
            spots = rng.uniform(0.08, 0.92, (4, 2))
            where = tuple(spots[np.argmax(np.linalg.norm(spots - target.centre, axis=1))])
        fill = int(rng.random() < 0.35 and d_shape not in SOLID_ONLY)
        distractors.append(_item(rng, d_shape, d_colour, fill, d_scale, where, front=rng.random() < 0.5))
    bar = None
    if rng.random() < 0.15:
        others = [c for c in range(len(COLOURS_V2)) if c != colour]
        bar = Bar(
            rng.uniform(0.55, 1.0),
            rng.uniform(0, 2 * np.pi),
            rng.uniform(0.025, 0.06),
            int(rng.choice(others)),
        )
    caption = _caption(rng, factors, tuple(distractors), heldout_words)
    return Scene(
        key=key,
        label=factors["class"],
        size_bucket=size,
        background=BACKGROUNDS[factors["background"]],
        jpeg=bool(factors["jpeg"]),
        named=bool(factors["named"]),
        target=target,
        distractors=tuple(distractors),
        bar=bar,
        caption=caption,
    )


def _position(rng: np.random.Generator, radius: float, cut: bool) -> tuple[float, float]:
    """Centre fully inside, or (``cut``) up to half a radius past the border."""
    lo = min(radius * (0.5 if cut else 1.0), 0.5)
    x, y = rng.uniform(lo, 1 - lo, 2)
    return float(x), float(y)


def _item(
    rng: np.random.Generator,
    shape: int,
    colour: int,
    fill: int,
    scale: float,
    centre: tuple[float, ...],
    front: bool = True,
) -> Item:
    angle, detail = rng.uniform(0, 2 * np.pi), rng.random()
    stroke = rng.uniform(0.25, 0.55) * HALF_THICKNESS[SHAPES_V2[shape]] if fill else 0.0
    x, y = centre
    return Item(
        shape, colour, fill, float(scale), (float(x), float(y)), float(angle), float(detail), stroke, front
    )


def _pick(words: tuple[str, ...], rng: np.random.Generator) -> str:
    """The canonical word half of the time, a synonym otherwise."""
    return words[0] if rng.random() < 0.5 else words[1 + int(rng.integers(len(words) - 1))]


def _caption(
    rng: np.random.Generator, factors: dict[str, int], distractors: tuple[Item, ...], heldout_words: bool
) -> str:
    template_id = int(rng.integers(len(TEMPLATES_V2)))
    c = _pick(colour_words(factors["colour"], heldout_words), rng)
    s = _pick(shape_words(factors["shape"], heldout_words), rng)
    attributes = []
    if factors["size"] != 1 and rng.random() < 0.5:
        attributes.append(SIZE_BUCKETS[factors["size"]])
    if factors["shape"] not in SOLID_ONLY and rng.random() < 0.5:
        attributes.append(FILLS[factors["fill"]])
    p, t = " ".join([*attributes, c, s]), " ".join([*attributes, s])
    literal = template_id < PROMPT_FORMS and not attributes  # the prompt form, verbatim
    text = TEMPLATES_V2[template_id].format(
        A="a" if literal else article(p), a=article(p), at=article(t), p=p, t=t, c=c
    )
    if not factors["named"]:
        return text
    names = []
    for d in distractors:
        colour_word = _pick(colour_words(d.colour, heldout_words), rng)
        names.append(f"a small {colour_word} {_pick(shape_words(d.shape, heldout_words), rng)}")
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{text.removesuffix('.')}, next to {listed}{'.' if text.endswith('.') else ''}"
