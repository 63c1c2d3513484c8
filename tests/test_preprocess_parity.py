"""Serving preprocessing (numpy + Pillow) against an independent torch implementation (torchvision)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2 as T

from lit_bundle.preprocess import PreprocessSpec, preprocess_image
from training.data.pairs import pixel_transform

_INTERPOLATION = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}


def torchvision_pipeline(spec: PreprocessSpec) -> T.Compose:
    mode = _INTERPOLATION[spec.interpolation]
    if spec.resize == "squash":
        resize = [T.Resize((spec.size, spec.size), interpolation=mode)]
    else:
        resize = [
            T.Resize(math.floor(spec.size / spec.crop_fraction), interpolation=mode),
            T.CenterCrop(spec.size),
        ]
    return T.Compose(
        [*resize, T.PILToTensor(), T.ToDtype(torch.float32, scale=True), T.Normalize(spec.mean, spec.std)]
    )


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    smooth = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(smooth).resize((width, height), Image.Resampling.BILINEAR)


SPECS = [
    PreprocessSpec(size=64, interpolation="bilinear"),
    PreprocessSpec(size=32, interpolation="bicubic", mean=(0.48145466, 0.4578275, 0.40821073),
                   std=(0.26862954, 0.26130258, 0.27577711)),
    PreprocessSpec(size=48, crop_fraction=0.875, interpolation="bicubic"),
    PreprocessSpec(size=32, resize="squash", interpolation="bilinear"),
]  # fmt: skip


@pytest.mark.parametrize(
    "spec", SPECS, ids=lambda s: f"{s.size}-{s.resize}-{s.interpolation}-{s.crop_fraction}"
)
@pytest.mark.parametrize("size", [(64, 64), (200, 120), (90, 301)])
def test_serving_matches_torchvision(spec: PreprocessSpec, size: tuple[int, int]) -> None:
    image = photo(*size)
    serving = preprocess_image(image, spec)
    reference = torchvision_pipeline(spec)(image).numpy()
    assert serving.shape == reference.shape == (3, spec.size, spec.size)
    assert np.abs(serving - reference).max() <= 1e-5


def test_training_transform_is_the_serving_function() -> None:
    spec = SPECS[1]
    image = photo(150, 100, seed=3)
    assert np.array_equal(pixel_transform(spec)(image).numpy(), preprocess_image(image, spec))


def test_non_rgb_images_become_rgb() -> None:
    spec = PreprocessSpec(size=16)
    grey = photo(20, 20).convert("L")
    assert preprocess_image(grey, spec).shape == (3, 16, 16)
    rgba = photo(20, 20).convert("RGBA")
    assert np.allclose(preprocess_image(rgba, spec), preprocess_image(rgba.convert("RGB"), spec))
