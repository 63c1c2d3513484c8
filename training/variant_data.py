"""The data a lower-precision variant is made and gated with: calibration inputs (the training data or a
folder of images) and the held-out labelled set of its accuracy gate."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from lit_bundle.manifest import VariantPrecision
from lit_bundle.prompts import expand_prompts
from training.config import TrainConfig
from training.data.labelled import LabelledSet
from training.data.synthetic import SyntheticPairs, SyntheticWorld
from training.precision_gate import GateSet
from training.sources import pair_dataset
from training.user_eval import images_in
from training.variants import VariantError, VariantRequest

CALIBRATION_IMAGES = 64
CALIBRATION_TEXTS = 256
GATE_IMAGES = 2048


def _training_samples(cfg: TrainConfig, count: int) -> tuple[list[Image.Image], list[str]]:
    """``count`` image-caption pairs spread over the training data (never its held-out split)."""
    dataset = pair_dataset(cfg.data, transform=None, split="train")  # type: ignore[arg-type]
    if hasattr(dataset, "__len__"):
        size = len(dataset)
        indices = np.linspace(0, size - 1, min(count, size)).astype(int) if size else []
        pairs = (dataset[int(i)] for i in indices)
    else:
        pairs = itertools.islice(iter(dataset), count)
    usable = [pair for pair in pairs if pair is not None]
    return [image.convert("RGB") for image, _ in usable], [caption for _, caption in usable]


def calibration_inputs(
    cfg: TrainConfig | None, folder: Path | None, prompts: Sequence[str]
) -> tuple[list[Image.Image], list[str], str]:
    """Calibration images and texts, and a line saying where they came from: images from ``folder`` when
    given, else from the training data; texts are training captions (when there is training data) and
    ``prompts``."""
    images: list[Image.Image] = []
    captions: list[str] = []
    if cfg is not None:
        images, captions = _training_samples(cfg, CALIBRATION_TEXTS)
    source = f"{len(images[:CALIBRATION_IMAGES])} training images"
    if folder is not None:
        images, source = images_in(folder, CALIBRATION_IMAGES), f"--calibration-images {folder}"
    if not images:
        raise VariantError(
            "int8 calibration needs images: give --calibration-images DIR (a folder of photos)"
        )
    texts = [*captions, *prompts][: 2 * CALIBRATION_TEXTS]
    return images[:CALIBRATION_IMAGES], texts, f"{source} and {len(texts)} texts"


def synthetic_gate_set(world: SyntheticWorld, size: int, templates: Sequence[str]) -> GateSet:
    """The synthetic world's evaluation split (rendered apart from every training split)."""
    pairs = SyntheticPairs(world, "eval", size)
    return GateSet(
        images=[pairs[i][0] for i in range(len(pairs))],  # type: ignore[misc]
        labels=[int(label) for label in pairs.labels],
        class_names=list(world.class_names),
        templates=tuple(templates),
        source=f"synthetic evaluation split, seed={world.seed}, {size} images",
    )


def labelled_gate_set(labelled: LabelledSet, templates: Sequence[str]) -> GateSet:
    subset = labelled.limit(GATE_IMAGES)
    return GateSet(
        images=[image.convert("RGB") for image in subset.images()],
        labels=list(subset.labels),
        class_names=list(subset.class_names),
        templates=tuple(templates),
        source=f"zero-shot set {labelled.source}, {len(subset)} images",
    )


def variant_request(
    precisions: Sequence[VariantPrecision],
    gate: GateSet | None,
    cfg: TrainConfig | None,
    calibration: Path | None,
) -> VariantRequest | None:
    """What ``export_bundle`` needs to make ``precisions`` (None when none is asked for)."""
    if not precisions:
        return None
    if gate is None:
        raise VariantError(
            "the accuracy gate of a lower-precision variant needs held-out labelled images: pass --eval-set "
            "DIR (an image folder per class) or set evaluation.zero_shot in the config"
        )
    prompts = expand_prompts(gate.class_names, gate.templates)
    images, texts, source = calibration_inputs(cfg, calibration, prompts)
    return VariantRequest(tuple(precisions), images, texts, gate, source)
