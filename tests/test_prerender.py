"""Rendering a synthetic split once into uint8 (training/data/prerender.py) and the pretraining that samples
it (training/pretrain.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_bundle import PreprocessSpec
from lit_bundle.preprocess import preprocess_image
from training.config import DataConfig
from training.data.pairs import PixelTransform
from training.data.prerender import PrerenderedPairs, normalise, render_uint8
from training.data.synthetic import SyntheticPairs, SyntheticWorld
from training.pretrain import factor_classes, turn_and_mirror
from training.sources import pair_dataset

SPEC = PreprocessSpec(size=32, interpolation="bilinear", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def test_a_normalised_batch_is_exactly_what_serving_preprocessing_makes() -> None:
    world = SyntheticWorld(image_size=32, seed=4, version=2)
    pixels = render_uint8(world, "pretrain", 6, SPEC)
    assert pixels.dtype == torch.uint8 and pixels.shape == (6, 3, 32, 32)
    expected = np.stack([preprocess_image(world.sample("pretrain", i)[0], SPEC) for i in range(6)])
    assert torch.equal(normalise(pixels, SPEC), torch.from_numpy(expected))


def test_a_larger_input_size_resizes_as_the_spec_says() -> None:
    spec = PreprocessSpec(size=48, interpolation="bicubic", mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4))
    world = SyntheticWorld(image_size=32, seed=0)
    pixels = render_uint8(world, "eval", 3, spec)
    expected = np.stack([preprocess_image(world.sample("eval", i)[0], spec) for i in range(3)])
    assert torch.allclose(normalise(pixels, spec), torch.from_numpy(expected), atol=1e-6)


def test_worker_processes_render_the_same_images_in_the_same_order() -> None:
    world = SyntheticWorld(image_size=32, seed=1, version=2)
    count = 300  # two chunks
    in_workers = render_uint8(world, "pretrain", count, SPEC, workers=2)
    assert torch.equal(in_workers, render_uint8(world, "pretrain", count, SPEC))


def test_nothing_to_render_is_an_empty_batch() -> None:
    assert render_uint8(SyntheticWorld(image_size=32), "eval", 0, SPEC).shape == (0, 3, 32, 32)


def test_version_2_pretraining_has_a_head_for_every_factor_it_draws() -> None:
    world = SyntheticWorld(image_size=32, version=2)
    classes = factor_classes(world)
    factors = world.factors("pretrain", np.arange(2000))
    assert set(classes) <= set(factors)
    for name, count in classes.items():
        assert factors[name].min() >= 0 and factors[name].max() == count - 1, name
    assert set(factor_classes(SyntheticWorld(image_size=32))) == {"shape", "colour"}


def test_turns_and_mirrors_keep_the_pixels_and_cover_all_eight_views() -> None:
    image = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).view(2, 3, 4, 4)
    rng = np.random.default_rng(0)
    views = {turn_and_mirror(image, rng).numpy().tobytes() for _ in range(200)}
    assert len(views) == 8
    out = turn_and_mirror(image, rng)
    assert torch.equal(out.flatten(1).sort().values, image.flatten(1).sort().values)


def test_prerendered_pairs_are_the_synthetic_pairs_they_replace() -> None:
    world = SyntheticWorld(image_size=32, seed=2, version=2)
    lazy = SyntheticPairs(world, "lit", 40, PixelTransform(SPEC))
    rendered = PrerenderedPairs(world, "lit", 40, SPEC, workers=1)
    assert rendered.fingerprint() == lazy.fingerprint()  # the same data: the feature cache key stays
    for i in (0, 17, 39):
        assert torch.equal(rendered[i][0], lazy[i][0]) and rendered[i][1] == lazy[i][1]
    with pytest.raises(IndexError):
        rendered[40]


def test_the_data_config_chooses_prerendering() -> None:
    cfg = DataConfig(kind="synthetic", synthetic={"image_size": 32, "train_size": 8, "prerender": True})
    assert isinstance(pair_dataset(cfg, PixelTransform(SPEC)), PrerenderedPairs)
    plain = cfg.model_copy(update={"synthetic": cfg.synthetic.model_copy(update={"prerender": False})})
    assert type(pair_dataset(plain, PixelTransform(SPEC))) is SyntheticPairs
