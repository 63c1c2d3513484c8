"""Sample images: held-out synthetic-world PNGs with the labels they are drawn from, and JPEG photos."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from training.data.synthetic import SyntheticWorld

WORLD = SyntheticWorld(image_size=64, seed=4242)
LABELS = WORLD.class_names[:10]


def encode(image: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    """``image`` as the bytes of a ``fmt`` file (Pillow's save ``options``)."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def distinct_images(count: int, labels: Sequence[str]) -> list[bytes]:
    """``count`` held-out synthetic images (PNG), each of a different class among ``labels``, so that the
    demo model's answers differ from image to image."""
    wanted = {WORLD.class_names.index(label) for label in labels}
    blobs, seen = [], set()
    for index in range(2000):
        image, _, label = WORLD.sample("eval", index)
        if label in wanted and label not in seen:
            seen.add(label)
            blobs.append(encode(image))
            if len(blobs) == count:
                return blobs
    raise ValueError(f"only {len(blobs)} distinct classes among {list(labels)}; asked for {count}")


def photo_jpegs(
    count: int, size: tuple[int, int] = (1600, 1200), quality: int = 85, seed: int = 0
) -> list[bytes]:
    """``count`` distinct JPEG photos of ``size`` (about 195 KB each at 1600x1200, quality 85): random 4:3
    crops of the photo matplotlib ships (``grace_hopper.jpg``), flipped and brightened at random, resized
    up."""
    import matplotlib
    from PIL import ImageEnhance, ImageOps

    source = Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB")
    rng = np.random.default_rng(seed)
    width, height = source.size
    blobs = []
    for _ in range(count):
        crop_w = int(width * rng.uniform(0.7, 1.0))
        crop_h = min(height, crop_w * size[1] // size[0])
        left, top = rng.integers(0, width - crop_w + 1), rng.integers(0, height - crop_h + 1)
        image = source.crop((int(left), int(top), int(left) + crop_w, int(top) + crop_h))
        image = image.resize(size, Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        image = ImageEnhance.Brightness(image).enhance(float(rng.uniform(0.85, 1.15)))
        blobs.append(encode(image, "JPEG", quality=quality))
    return blobs
