"""Image preprocessing shared by training and serving (numpy + Pillow only).

Training wraps :func:`preprocess_image` with ``torch.from_numpy``; serving calls it directly, so the
two cannot drift apart.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

Interpolation = Literal["nearest", "bilinear", "bicubic", "lanczos"]


class PreprocessSpec(BaseModel):
    """How an RGB image becomes the encoder's input tensor.

    ``resize="shortest"`` scales the shorter side to ``size / crop_fraction`` and then centre-crops
    ``size`` x ``size`` (timm's ``crop_pct``); ``"squash"`` resizes both sides to ``size`` ignoring aspect
    ratio. Pixels are scaled to [0, 1] and then normalised with
    ``(x - mean) / std``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(gt=0)
    resize: Literal["shortest", "squash"] = "shortest"
    crop_fraction: float = Field(default=1.0, gt=0.0, le=1.0)
    interpolation: Interpolation = "bicubic"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


def crop_plan(width: int, height: int, spec: PreprocessSpec) -> tuple[int, int, int, int]:
    """``(new_w, new_h, left, top)``: the size :func:`resize_and_crop` resizes to and where its crop starts.

    Rounding follows torchvision (and so timm/open_clip): truncate the long side, round the offset."""
    if spec.resize == "squash":
        return spec.size, spec.size, 0, 0
    short = math.floor(spec.size / spec.crop_fraction)
    if width <= height:
        new_w, new_h = short, int(short * height / width)
    else:
        new_w, new_h = int(short * width / height), short
    return new_w, new_h, round((new_w - spec.size) / 2.0), round((new_h - spec.size) / 2.0)


def resize_and_crop(image: Image.Image, spec: PreprocessSpec) -> Image.Image:
    """Resize (and centre-crop) an RGB image to ``spec.size`` x ``spec.size``."""
    resample = _RESAMPLE[spec.interpolation]
    size = spec.size
    if image.size == (size, size) and (spec.resize == "squash" or spec.crop_fraction == 1.0):
        return image
    if spec.resize == "squash":
        return image.resize((size, size), resample)
    new_w, new_h, left, top = crop_plan(*image.size, spec)
    image = image.resize((new_w, new_h), resample)
    return image.crop((left, top, left + size, top + size))


def preprocess_image(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """Return the normalised float32 CHW array the image encoder expects."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    pixels = np.asarray(resize_and_crop(image, spec), dtype=np.float32) / np.float32(255.0)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1))
