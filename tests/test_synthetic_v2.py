"""Synthetic world version 2: wider and harder, behind a version switch that leaves version 1 untouched."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from training.data import backgrounds, render, scenes, vocabulary
from training.data.synthetic import SyntheticPairs, SyntheticWorld

V2 = SyntheticWorld(image_size=64, seed=0, version=2)
SMALL = SyntheticWorld(image_size=32, seed=0, version=2)


def digest(image) -> str:
    return hashlib.sha256(np.asarray(image).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def lit_scenes() -> list[scenes.Scene]:
    return [V2.scene("lit", i) for i in range(3000)]


@pytest.fixture(scope="module")
def drawings() -> list[tuple[scenes.Scene, render.Drawing]]:
    plans = [V2.scene("pretrain", i) for i in range(400)]
    return [(plan, render.draw(plan, 64)) for plan in plans]


# Taken from the code before version 2 existed: version 1 must render these bit for bit.
V1_SAMPLES = [
    (32, "lit", 0, "purple hoop on a grey background", 46, "fdc0668c91056cf870f306fc47124016"),
    (32, "lit", 5, "a starburst that is turquoise", 28, "6e93e6a089c58f6aad7e2191ec4c705f"),
    (32, "eval", 17, "a drawing of an orange wedge.", 17, "ea80a769d1ad253a4199e16b113857d1"),
    (32, "pretrain", 123, "there is a pink square in the picture", 15, "7047ac1c3ae2eaf23d20535fe50f77e1"),
    (64, "lit", 0, "there is a plum ring in the picture", 46, "b060efc958489a7b28f599c602f46282"),
    (64, "eval", 17, "a picture of a amber triangular shape.", 17, "abcc931cc58cfdf35a1436bcc3da95a6"),
    (64, "pretrain", 123, "a square in pink.", 15, "ef1c955ce34ebe01ba3a676abc8594bb"),
]  # sha256 of the pixels, first 128 bits


@pytest.mark.parametrize(("size", "split", "index", "caption", "label", "sha"), V1_SAMPLES)
def test_version_1_is_unchanged(size: int, split, index: int, caption: str, label: int, sha: str) -> None:
    for world in (SyntheticWorld(size, 0), SyntheticWorld(size, 0, version=1)):
        image, got_caption, got_label = world.sample(split, index)
        assert (got_caption, got_label, digest(image)[:32]) == (caption, label, sha)


def test_fingerprint_includes_the_version_and_keeps_version_1s() -> None:
    v1 = SyntheticPairs(SyntheticWorld(32, 0), "lit", 10).fingerprint()
    assert (
        v1 == "892a7e9277648494657e4fdbf4ddd42b6d071f7ed8ee1b8776198b388b96fc28"
    )  # existing caches stay valid
    assert SyntheticPairs(SMALL, "lit", 10).fingerprint() != v1
    assert SyntheticPairs(SMALL, "lit", 10).fingerprint() == SyntheticPairs(SMALL, "lit", 10).fingerprint()
    with pytest.raises(ValueError, match="version"):
        SyntheticWorld(64, 0, version=3)


def test_version_2_is_deterministic_and_plans_do_not_depend_on_size() -> None:
    again = SyntheticWorld(image_size=64, seed=0, version=2)
    for split, index in (("lit", 3), ("eval", 200), ("pretrain", 9)):
        a, b = V2.sample(split, index), again.sample(split, index)
        assert (a[1], a[2], digest(a[0])) == (b[1], b[2], digest(b[0]))
        assert a[0].size == (64, 64) and a[0].mode == "RGB"
        assert SMALL.scene(split, index) == V2.scene(split, index)
        assert SMALL.sample(split, index)[0].size == (32, 32)
    other = SyntheticWorld(image_size=64, seed=1, version=2)
    assert digest(other.sample("lit", 3)[0]) != digest(V2.sample("lit", 3)[0])


def test_vocabulary_and_heldout_combinations_keep_every_factor_seen() -> None:
    assert V2.num_classes == 144 and len(set(V2.class_names)) == 144
    assert V2.class_names[V2.shapes.index("star") * 12 + V2.colours.index("white")] == "white star"
    assert {"square", "cross"} <= set(V2.shapes) and not {"diamond", "x", "hexagon"} & set(V2.shapes)
    held, seen = set(V2.heldout_classes), set(V2.seen_classes)
    assert len(held) == 36 and not held & seen and held | seen == set(range(144))
    assert {k // 12 for k in seen} == set(range(12)) and {k % 12 for k in seen} == set(range(12))
    assert set(np.bincount([k % 12 for k in held]).tolist()) == {3}

    lit = V2.classes_for("lit", np.arange(20000))
    assert not held & set(lit.tolist()) and set(lit.tolist()) == seen
    assert set(V2.classes_for("pretrain", np.arange(5000)).tolist()) == set(range(144))
    assert np.bincount(V2.classes_for("eval", np.arange(288)), minlength=144).tolist() == [2] * 144


def test_no_heldout_pair_is_shown_in_lit_even_as_a_distractor(lit_scenes: list[scenes.Scene]) -> None:
    held = set(V2.heldout_classes)
    for plan in lit_scenes:
        assert plan.label not in held
        for d in plan.distractors:
            assert d.shape * 12 + d.colour not in held
            assert (
                d.shape != plan.target.shape
                and d.colour != plan.target.colour
                and d.scale <= 0.55 * plan.target.scale + 1e-9
            )


def test_the_subject_is_always_clearly_the_largest_shape(lit_scenes: list[scenes.Scene]) -> None:
    """Distractors stay at most 0.55x the target, so an image is never ambiguous about what it shows."""
    ratios = [d.scale / plan.target.scale for plan in lit_scenes for d in plan.distractors]
    assert ratios and max(ratios) <= 0.55 + 1e-9


def _mentions(caption: str, phrase: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", caption) is not None


def test_heldout_words_only_at_evaluation(lit_scenes: list[scenes.Scene]) -> None:
    words = [w for synonyms in V2.heldout_words.values() for w in synonyms]
    assert len(words) == 24 and set(V2.heldout_words) == set(V2.shapes) | set(V2.colours)
    pretrain = V2.captions("pretrain", np.arange(1000))
    for caption in [plan.caption for plan in lit_scenes] + pretrain:
        assert not [w for w in words if _mentions(caption, w)], caption
    evaluation = " | ".join(V2.captions("eval", np.arange(2000)))
    assert sum(_mentions(evaluation, w) for w in words) >= 20  # evaluation captions do use them

    names = V2.heldout_word_class_names()
    assert names[V2.class_names.index("red circle")] == "ruby dot"
    assert V2.heldout_word_class_names("colour")[0] == "ruby circle"
    assert V2.heldout_word_class_names("shape")[0] == "red dot"
    prompts = V2.heldout_word_prompts(["a photo of a {}.", "a {}."])
    assert len(prompts) == 144 and prompts[0] == ["a photo of a ruby dot.", "a ruby dot."]
    with pytest.raises(ValueError, match="version 2"):
        SyntheticWorld(32, 0).heldout_word_class_names()
    assert SyntheticWorld(32, 0).heldout_words == {}


def test_prompt_forms_occur_verbatim_with_canonical_names(lit_scenes: list[scenes.Scene]) -> None:
    """Zero-shot prompts fill "a photo of a {}." etc. with the canonical class name: training says it too."""
    seen = {t: 0 for t in ("a photo of a {}.", "a {}.", "a picture of a {}.", "an image of a {}.")}
    for plan in lit_scenes:
        for template in seen:
            seen[template] += plan.caption == template.replace("{}", V2.class_names[plan.label])
    assert min(seen.values()) >= 10, seen


def test_factor_labels_are_cheap_and_match_the_plans(lit_scenes: list[scenes.Scene]) -> None:
    factors = V2.factors("lit", np.arange(len(lit_scenes)))
    assert set(factors) == {
        "class",
        "shape",
        "colour",
        "fill",
        "size",
        "background",
        "distractors",
        "named",
        "jpeg",
    }
    for i, plan in enumerate(lit_scenes):
        assert factors["class"][i] == plan.label and factors["shape"][i] == plan.target.shape
        assert factors["fill"][i] == plan.target.fill and factors["size"][i] == plan.size_bucket
        assert vocabulary.BACKGROUNDS[factors["background"][i]] == plan.background
        assert factors["distractors"][i] == len(plan.distractors)
        assert (factors["named"][i], factors["jpeg"][i]) == (plan.named, plan.jpeg)
        low, high = vocabulary.SIZE_RANGES[plan.size_bucket]
        assert low <= plan.target.scale <= high
    assert set(factors["background"].tolist()) == set(range(len(vocabulary.BACKGROUNDS)))
    assert set(factors["size"].tolist()) == {0, 1, 2} and set(factors["distractors"].tolist()) == {0, 1, 2, 3}
    assert not factors["fill"][np.isin(factors["shape"], sorted(vocabulary.SOLID_ONLY))].any()
    assert 0.25 < factors["jpeg"].mean() < 0.45  # JPEG-compressed samples occur
    pairs = SyntheticPairs(V2, "lit", 50)
    assert all(np.array_equal(pairs.factor_labels()[k], v[:50]) for k, v in factors.items())
    assert np.array_equal(pairs.shape_labels * 12 + pairs.colour_labels, pairs.labels)
    v1 = SyntheticPairs(SyntheticWorld(32, 0), "lit", 20).factor_labels()
    assert set(v1) == {"class", "shape", "colour"} and np.array_equal(
        v1["shape"] * 8 + v1["colour"], v1["class"]
    )


def test_captions_name_distractors_only_when_they_say_so(lit_scenes: list[scenes.Scene]) -> None:
    named = [p for p in lit_scenes if p.named]
    silent = [p for p in lit_scenes if p.distractors and not p.named]
    assert len(named) > 300 and len(silent) > 300
    for plan in named:
        tail = plan.caption.partition(", next to ")[2]
        assert tail.count("a small ") == len(plan.distractors), plan.caption
        for d in plan.distractors:
            assert any(_mentions(tail, w) for w in vocabulary.colour_words(d.colour, False)), plan.caption
            assert any(_mentions(tail, w) for w in vocabulary.shape_words(d.shape, False)), plan.caption
    for plan in silent + [p for p in lit_scenes if not p.distractors]:
        assert "next to" not in plan.caption


def test_attribute_words_match_the_factors(lit_scenes: list[scenes.Scene]) -> None:
    counts = {"small": 0, "large": 0, "outlined": 0, "solid": 0}
    for plan in lit_scenes:
        head = plan.caption.partition(", next to ")[0].split()
        for word in counts:
            counts[word] += word in head
        assert ("small" in head) <= (plan.size_bucket == 0) and ("large" in head) <= (plan.size_bucket == 2)
        assert ("outlined" in head) <= (plan.target.fill == 1) and ("solid" in head) <= (
            plan.target.fill == 0
        )
    assert min(counts.values()) > 100, counts


def test_contrast_rule_holds_for_the_rendered_shape(drawings) -> None:
    """The shape's mean rendered colour vs the background around it, in Lab, is above the threshold."""
    fallbacks = 0
    for plan, drawing in drawings:
        solid = (drawing.target_alpha > 0.999) & (drawing.visible > 0.999)
        if solid.sum() < 4:
            continue
        shape = drawing.clean[solid].mean(0)
        assert np.abs(shape - drawing.target_rgb).max() < 0.5  # the colour drawn is the colour checked
        mean_distance, pixel_distance = backgrounds.contrast(drawing.background[drawing.window], shape)
        assert mean_distance >= backgrounds.MIN_CONTRAST - 0.05, (plan, mean_distance)
        assert pixel_distance >= backgrounds.MIN_PIXEL_CONTRAST - 3, (plan, pixel_distance)
        fallbacks += drawing.fallback
    assert fallbacks <= len(drawings) * 0.02


def test_backgrounds_are_light_dark_and_everything_between(drawings) -> None:
    lightness: dict[str, list[float]] = {}
    for plan, drawing in drawings:
        lightness.setdefault(plan.background, []).append(
            float(backgrounds.srgb_to_lab(drawing.background)[..., 0].mean())
        )
    assert set(lightness) == set(vocabulary.BACKGROUNDS)
    assert min(lightness["light"]) > 75 and max(lightness["dark"]) < 30
    everything = [v for values in lightness.values() for v in values]
    assert min(everything) < 10 and max(everything) > 90
    chroma = [np.hypot(*backgrounds.srgb_to_lab(d.background.mean((0, 1)))[1:]) for _, d in drawings]
    assert max(chroma) > 60  # saturated backgrounds too


def test_outlines_fills_occlusion_scale_and_jpeg_are_drawn(drawings) -> None:
    outlined = [(plan, d) for plan, d in drawings if plan.target.fill == 1]
    assert len(outlined) > 50 and len(outlined) < len(drawings) - 50
    for plan, drawing in [(p, d) for p, d in outlined if p.size_bucket > 0][:20]:
        filled = dataclasses.replace(plan, target=dataclasses.replace(plan.target, fill=0, stroke=0.0))
        assert drawing.target_alpha.sum() < 0.85 * render.draw(filled, 64).target_alpha.sum()
    hidden = np.array([1 - d.visible.sum() / d.target_alpha.sum() for _, d in drawings])
    assert hidden.max() <= render.MAX_OCCLUSION + 1e-4 and (hidden > 0.05).sum() >= 10
    touching = [d.target_alpha[[0, -1]].any() or d.target_alpha[:, [0, -1]].any() for _, d in drawings]
    assert 0.05 < np.mean(touching) < 0.8  # some targets run past the border
    assert {d.jpeg_quality > 0 for _, d in drawings} == {True, False}
    assert all((d.jpeg_quality > 0) == plan.jpeg and d.jpeg_quality <= 95 for plan, d in drawings)
    assert min(d.jpeg_quality for _, d in drawings if d.jpeg_quality) >= 30
    angles = np.array([plan.target.angle for plan, _ in drawings])
    assert angles.min() < 0.5 and angles.max() > 2 * np.pi - 0.5  # full rotation


def test_distractors_are_drawn_where_planned(drawings) -> None:
    """A filled distractor whose centre lies deep inside it shows its own colour there (unless covered)."""
    central = {
        vocabulary.SHAPES_V2.index(s) for s in ("circle", "square", "heart", "oval", "star", "semicircle")
    }
    near = []
    for plan, drawing in drawings:
        for d in plan.distractors:
            x, y = (int(c * 64) for c in d.centre)
            if d.fill or d.shape not in central or d.scale < 0.15 or not (0 < x < 63 and 0 < y < 63):
                continue
            if drawing.target_alpha[y, x] > 0:
                continue
            distance = np.linalg.norm(drawing.clean[y, x] - np.asarray(vocabulary.COLOUR_RGB_V2[d.colour]))
            near.append(distance < 40)  # jitter is at most 12 per channel
    assert len(near) > 30 and np.mean(near) > 0.9


def test_version_specific_methods_say_so() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="version 1"):
        V2.render(0, 0, rng)
    with pytest.raises(ValueError, match="version 1"):
        V2.caption(0, 0, rng)
    with pytest.raises(ValueError, match="version 2"):
        SyntheticWorld(32, 0).scene("lit", 0)


def test_dataset_items_are_the_samples_and_survive_pickling() -> None:
    data = pickle.loads(pickle.dumps(SyntheticPairs(SMALL, "eval", 20)))  # as DataLoader workers get it
    assert data.labels.tolist() == list(range(20))
    image, caption = data[7]
    expected = SMALL.sample("eval", 7)
    assert caption == expected[1] and digest(image) == digest(expected[0])


def test_contact_sheet_script() -> None:
    path = Path(__file__).parents[1] / "scripts" / "world_v2_sheet.py"
    spec = importlib.util.spec_from_file_location("world_v2_sheet", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sheet = module.contact_sheet(count=7, split="lit", seed=0, size=32)
    assert sheet.size[0] > 6 * 160 and sheet.size[1] > 2 * 160
