"""Render a synthetic split once, in worker processes, into one compact uint8 tensor.

Pretraining samples the same images many times (with quarter turns and mirror images on top); keeping them
as uint8 at the tower's input size costs a quarter of float32's memory, and :func:`normalise` turns a batch
into exactly what :func:`lit_bundle.preprocess.preprocess_image` would have produced image by image.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Iterable
from functools import partial

import numpy as np
import torch
from tqdm import tqdm

from lit_bundle import PreprocessSpec
from lit_bundle.preprocess import resize_and_crop
from training.data.pairs import PixelTransform
from training.data.synthetic import Split, SyntheticPairs, SyntheticWorld

CHUNK = 256


def _render_chunk(
    world: SyntheticWorld, split: Split, spec: PreprocessSpec, bounds: tuple[int, int]
) -> tuple[np.ndarray, list[str]]:
    images, captions = [], []
    for index in range(*bounds):
        image, caption, _ = world.sample(split, index)
        images.append(np.asarray(resize_and_crop(image.convert("RGB"), spec), dtype=np.uint8))
        captions.append(caption)
    return np.stack(images), captions


def render_with_captions(
    world: SyntheticWorld,
    split: Split,
    count: int,
    spec: PreprocessSpec,
    workers: int = 1,
    progress: bool = False,
    desc: str = "rendering images",
) -> tuple[torch.Tensor, list[str]]:
    """Samples ``0..count-1`` of ``split`` as a ``(count, 3, size, size)`` uint8 tensor, resized and cropped
    as ``spec`` says, and their captions; ``workers`` > 1 renders in that many processes (the result is
    the same)."""
    bounds = [(start, min(start + CHUNK, count)) for start in range(0, count, CHUNK)]
    job = partial(_render_chunk, world, split, spec)
    bar = tqdm(total=count, desc=desc, disable=not progress)
    images: list[np.ndarray] = []
    captions: list[str] = []
    chunks: Iterable[tuple[np.ndarray, list[str]]]
    with contextlib.ExitStack() as stack:
        if workers > 1 and len(bounds) > 1:
            # spawn: the parent holds torch's thread pools, which a forked child must not inherit.
            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(min(workers, len(bounds))))
            chunks = pool.imap(job, bounds)
        else:
            chunks = map(job, bounds)
        for chunk_images, chunk_captions in chunks:
            images.append(chunk_images)
            captions += chunk_captions
            bar.update(len(chunk_captions))
    bar.close()
    if not images:
        return torch.empty((0, 3, spec.size, spec.size), dtype=torch.uint8), []
    return torch.from_numpy(np.concatenate(images)).permute(0, 3, 1, 2).contiguous(), captions


def render_uint8(
    world: SyntheticWorld,
    split: Split,
    count: int,
    spec: PreprocessSpec,
    workers: int = 1,
    progress: bool = False,
    desc: str = "rendering images",
) -> torch.Tensor:
    """:func:`render_with_captions` without the captions."""
    return render_with_captions(world, split, count, spec, workers, progress, desc)[0]


def normalise(pixels: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` -> the float32 input :func:`~lit_bundle.preprocess.preprocess_image` makes."""
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)
    return (pixels.float() / 255.0 - mean) / std


class PrerenderedPairs(SyntheticPairs):
    """:class:`SyntheticPairs` rendered once into uint8 (in ``workers`` processes) and normalised per item:
    the same pairs, for towers that read every image many times (an unlocked image tower has no feature
    cache). Costs ``size x 3 x S x S`` bytes: 245 MB for 20,000 images at 64 px."""

    def __init__(
        self, world: SyntheticWorld, split: Split, size: int, spec: PreprocessSpec, workers: int
    ) -> None:
        super().__init__(world, split, size, PixelTransform(spec))
        self.spec = spec
        self.pixels, self.caption_list = render_with_captions(world, split, size, spec, workers)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} synthetic samples")
        return normalise(self.pixels[index : index + 1], self.spec)[0], self.caption_list[index]
