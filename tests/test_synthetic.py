"""The synthetic world: deterministic, held-out combinations never leak into text tuning."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from lit_bundle.preprocess import PreprocessSpec
from training.data.pairs import pixel_transform
from training.data.synthetic import COLOURS, SHAPES, SyntheticPairs, SyntheticWorld

WORLD = SyntheticWorld(image_size=32, seed=0)


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_class_layout() -> None:
    assert len(SHAPES) == len(COLOURS) == 8
    names = WORLD.class_names
    assert len(names) == 64 and len(set(names)) == 64
    assert names[0] == "red circle"
    assert names[SHAPES.index("star") * 8 + COLOURS.index("blue")] == "blue star"


def test_heldout_split_keeps_every_factor_seen() -> None:
    held, seen = set(WORLD.heldout_classes), set(WORLD.seen_classes)
    assert len(held) >= 0.2 * 64 and not held & seen and held | seen == set(range(64))
    assert {k // 8 for k in seen} == set(range(8))
    assert {k % 8 for k in seen} == set(range(8))


def test_sample_is_deterministic_and_seed_dependent() -> None:
    a_img, a_cap, a_cls = WORLD.sample("lit", 5)
    b_img, b_cap, b_cls = SyntheticWorld(image_size=32, seed=0).sample("lit", 5)
    assert (a_cap, a_cls) == (b_cap, b_cls)
    assert np.array_equal(pixels(a_img), pixels(b_img))
    assert a_img.size == (32, 32) and a_img.mode == "RGB"
    other = SyntheticWorld(image_size=32, seed=1)
    assert not np.array_equal(pixels(a_img), pixels(other.sample("lit", 5)[0]))
    # Splits are separate image streams even where they share a class.
    assert not np.array_equal(pixels(WORLD.sample("eval", 0)[0]), pixels(WORLD.sample("pretrain", 0)[0]))


def test_splits_draw_the_right_classes() -> None:
    held = set(WORLD.heldout_classes)
    lit = WORLD.classes_for("lit", np.arange(2000))
    assert not held & set(lit.tolist())
    assert set(lit.tolist()) == set(WORLD.seen_classes)
    pretrain = WORLD.classes_for("pretrain", np.arange(2000))
    assert set(pretrain.tolist()) == set(range(64))
    assert np.bincount(WORLD.classes_for("eval", np.arange(128)), minlength=64).tolist() == [2] * 64
    with pytest.raises(ValueError, match="unknown synthetic split"):
        WORLD.sample("train", 0)  # type: ignore[arg-type]


def test_dataset_labels_match_rendered_samples() -> None:
    data = SyntheticPairs(WORLD, "lit", 300)
    assert len(data) == 300 and data.labels.dtype == np.int64
    assert np.array_equal(data.shape_labels * 8 + data.colour_labels, data.labels)
    for i in (0, 7, 299):
        image, _ = data[i]
        assert WORLD.sample("lit", i)[2] == data.labels[i]
        assert np.array_equal(pixels(image), pixels(WORLD.sample("lit", i)[0]))
    with pytest.raises(IndexError):
        data[300]


def test_rendered_colour_matches_label() -> None:
    """The most saturated pixels sit closest to the labelled colour's base RGB."""
    from training.data.synthetic import _COLOUR_RGB

    base = np.asarray(_COLOUR_RGB, dtype=np.float32)
    for i in range(16):
        image, _, label = WORLD.sample("pretrain", i)
        rgb = np.asarray(image, dtype=np.float32).reshape(-1, 3)
        saturation = rgb.max(1) - rgb.min(1)
        top = rgb[saturation >= np.quantile(saturation, 0.9)].mean(0)
        assert int(np.argmin(((base - top) ** 2).sum(1))) == label % 8


def test_captions_vary_and_use_synonyms() -> None:
    rng = np.random.default_rng(0)
    captions = [WORLD.caption(0, 0, rng) for _ in range(300)]  # red circle
    assert len(set(captions)) > 30
    assert "a photo of a red circle." in captions and "a red circle." in captions
    text = " ".join(captions)
    assert any(w in text for w in ("crimson", "scarlet")) and any(w in text for w in ("disc", "round dot"))
    reds = sum("red" in c.split() for c in captions)
    assert 0.35 < reds / len(captions) < 0.65  # canonical word about half the time


def test_images_show_nuisance_variation() -> None:
    rng = np.random.default_rng(0)
    images = [pixels(WORLD.render(1, 5, rng)) for _ in range(8)]  # blue squares
    backgrounds = {tuple(img[0, 0] // 8) for img in images}
    assert len(backgrounds) > 3
    coverage = [(img[..., 2] - img[..., 0] > 80).mean() for img in images]
    assert max(coverage) - min(coverage) > 0.05  # size varies
    centroids = [np.argwhere(img[..., 2] - img[..., 0] > 80).mean(0) for img in images]
    assert np.ptp(np.asarray(centroids), axis=0).max() > 3  # position varies


def test_fingerprint_is_stable_and_sensitive() -> None:
    base = SyntheticPairs(WORLD, "lit", 10).fingerprint()
    assert base == SyntheticPairs(SyntheticWorld(32, 0), "lit", 10).fingerprint()
    for other in (
        SyntheticPairs(SyntheticWorld(32, 1), "lit", 10),
        SyntheticPairs(SyntheticWorld(64, 0), "lit", 10),
        SyntheticPairs(WORLD, "eval", 10),
        SyntheticPairs(WORLD, "lit", 11),
    ):
        assert other.fingerprint() != base


def test_transform_is_picklable_and_batches_through_workers() -> None:
    data = SyntheticPairs(WORLD, "eval", 8, transform=pixel_transform(PreprocessSpec(size=32)))
    data = pickle.loads(pickle.dumps(data))
    loader = torch.utils.data.DataLoader(data, batch_size=4, num_workers=2)
    batches = list(loader)
    assert batches[0][0].shape == (4, 3, 32, 32) and batches[0][0].dtype == torch.float32
    assert batches[1][1][3] == data[7][1]
