"""Words, colours and class layout of the synthetic world's render version 2.

Version 2 widens version 1 (8 shapes x 8 colours) to 12 x 12 = 144 classes. Two rules keep a class a
class whatever the nuisance factors do:

* Full rotation is allowed, so no class may be another class rotated: there is a square but no diamond
  (a square turned 45 degrees), a cross but no "x". Shapes whose outline is another class are never drawn
  outlined: an outlined circle would be a ring, and a ring is already a band.
* Every class must survive the smallest scale (~10 px across at 64 px) plus blur and JPEG, so there is no
  hexagon or pentagon: at that size their corners sit 0.7-1 px off the circumcircle and read as circles.

Each shape and colour has a canonical word (used verbatim by the zero-shot prompt templates), seen synonyms
(captions of every split) and one held-out synonym that only the ``"eval"`` split's captions and the
held-out-word evaluation prompts use. No held-out word occurs, as a whole word, inside a seen word.
"""

from __future__ import annotations

SHAPES_V2: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "heart",
    "crescent",
    "arrow",
    "semicircle",
    "bolt",
    "oval",
)
COLOURS_V2: tuple[str, ...] = (
    "red",
    "orange",
    "yellow",
    "green",
    "cyan",
    "blue",
    "purple",
    "pink",
    "brown",
    "white",
    "black",
    "grey",
)

# Base sRGB of each colour; pairwise CIE76 distance >= 30 (brown/orange and pink/purple are the closest).
COLOUR_RGB_V2: tuple[tuple[int, int, int], ...] = (
    (215, 35, 35),
    (245, 135, 20),
    (240, 225, 40),
    (40, 170, 55),
    (40, 210, 225),
    (35, 75, 235),
    (140, 55, 200),
    (250, 135, 200),
    (120, 72, 35),
    (245, 245, 245),
    (18, 18, 18),
    (128, 128, 128),
)

# (seen synonyms, held-out synonym) per shape / colour, canonical word excluded.
SHAPE_SYNONYMS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("disc", "round spot"), "dot"),
    (("box", "block"), "tile"),
    (("triangular shape", "wedge"), "three-sided shape"),
    (("five-pointed star", "starburst"), "pentagram"),
    (("plus sign", "plus"), "plus symbol"),
    (("donut", "hoop"), "loop"),
    (("love heart", "heart shape"), "valentine"),
    (("crescent moon", "moon shape"), "sickle"),
    (("arrow sign", "arrow symbol"), "pointer"),
    (("half circle", "half disc"), "half-round"),
    (("lightning bolt", "zigzag"), "thunderbolt"),
    (("ellipse", "egg shape"), "ovoid"),
)
COLOUR_SYNONYMS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("crimson", "scarlet"), "ruby"),
    (("tangerine", "amber"), "pumpkin"),
    (("golden", "lemon"), "canary"),
    (("emerald", "grass green"), "jade"),
    (("turquoise", "aqua"), "teal"),
    (("azure", "cobalt"), "sapphire"),
    (("violet", "plum"), "amethyst"),
    (("rose", "fuchsia"), "magenta"),
    (("chocolate", "coffee-coloured"), "chestnut"),
    (("ivory", "snow-white"), "pearl"),
    (("ebony", "jet-black"), "onyx"),
    (("gray", "silver"), "slate"),
)

# Never drawn outlined (see the module docstring); their fill label is always "solid".
SOLID_ONLY: frozenset[int] = frozenset({SHAPES_V2.index("circle"), SHAPES_V2.index("ring")})

FILLS: tuple[str, ...] = ("solid", "outlined")
SIZE_BUCKETS: tuple[str, ...] = ("small", "medium", "large")
# Target extent (circumdiameter) as a fraction of the image side, per size bucket.
SIZE_RANGES: tuple[tuple[float, float], ...] = ((0.22, 0.38), (0.38, 0.6), (0.6, 0.9))
BACKGROUNDS: tuple[str, ...] = (
    "light",
    "dark",
    "mid",
    "linear",
    "radial",
    "blobs",
    "stripes",
    "checks",
    "photo",
)

# The first four are the zero-shot prompt forms with the canonical class name ("{A}" is their literal
# "a"/"an" when no attribute precedes the colour, exactly as str.replace fills them, else the correct
# article). "{a}"/"{at}" are the correct articles of "{p}" (attributes, colour, shape) and "{t}"
# (attributes, shape).
TEMPLATES_V2: tuple[str, ...] = (
    "a photo of {A} {p}.",
    "{A} {p}.",
    "a picture of {A} {p}.",
    "an image of {A} {p}.",
    "{a} {p}",
    "{at} {t} that is {c}",
    "a close-up of {a} {p}.",
    "an image of {at} {t} coloured {c}.",
    "a drawing of {a} {p}.",
    "this is a photo of {a} {p}.",
    "{at} {t} in {c}.",
    "there is {a} {p} in the picture",
    "a rendering of {a} {p}",
)
PROMPT_FORMS = 4  # TEMPLATES_V2[:PROMPT_FORMS] are the zero-shot prompt forms


def heldout_classes_v2() -> list[int]:
    """36 of 144 combinations, three per shape and three per colour, so every factor is still seen 9x."""
    return list(_HELDOUT_V2)


_HELDOUT_V2 = tuple(
    sorted(
        s * len(COLOURS_V2) + (s + 4 * k) % len(COLOURS_V2) for s in range(len(SHAPES_V2)) for k in range(3)
    )
)
SEEN_V2 = tuple(k for k in range(len(SHAPES_V2) * len(COLOURS_V2)) if k not in _HELDOUT_V2)


def shape_words(shape: int, heldout: bool) -> tuple[str, ...]:
    """Canonical word first, then the synonyms a caption may use (the held-out one only if allowed)."""
    seen, held = SHAPE_SYNONYMS[shape]
    return (SHAPES_V2[shape], *seen, *((held,) if heldout else ()))


def colour_words(colour: int, heldout: bool) -> tuple[str, ...]:
    seen, held = COLOUR_SYNONYMS[colour]
    return (COLOURS_V2[colour], *seen, *((held,) if heldout else ()))


def heldout_words_v2() -> dict[str, tuple[str, ...]]:
    """Canonical word -> its held-out synonyms (never in ``"lit"`` or ``"pretrain"`` captions)."""
    pairs = zip((*SHAPES_V2, *COLOURS_V2), (*SHAPE_SYNONYMS, *COLOUR_SYNONYMS), strict=True)
    return {word: (held,) for word, (_, held) in pairs}


def article(phrase: str) -> str:
    return "an" if phrase[:1] in "aeiou" else "a"
