"""Evaluation on the user's own data, as clip_benchmark and big_vision do it.

- **Zero-shot classification** on a labelled set (:class:`~training.data.labelled.LabelledSet`): one
  prompt-ensembled classifier per class, top-1/top-5, per-class accuracy and the confusion matrix.
- **Image-text retrieval** (recall@1/5/10 both ways) on held-out pairs: a manifest or WebDataset shards,
  or the held-out split of the training data (a hash of each image path keeps it out of training).

Both take any :class:`~training.encoders.Encoders`, so a checkpoint and an exported bundle are scored by
the same code; every result names the data it came from (:class:`~lit_bundle.manifest.EvaluationData`).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from lit_bundle.manifest import EvaluationData
from training.config import DataConfig, EvaluationConfig, TrainConfig
from training.data.labelled import IMAGE_SUFFIXES, LabelledSet
from training.data.pairs import ManifestPairs
from training.data.split import Split
from training.data.webdataset import WebDatasetPairs, expand_shards
from training.encoders import Encoders
from training.evaluate import (
    build_classifier,
    confusion_matrix,
    retrieval_recall,
    topk_accuracy,
    zero_shot_scores,
)
from training.zero_shot import Evaluation

IMAGE_BATCH = 64
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".json")


class EvaluationError(ValueError):
    """No evaluation data, or data that cannot be used; the message says what to give instead."""


# ------------------------------------------------------------------------------------- retrieval data


@dataclass(frozen=True)
class RetrievalSource:
    """Image-text pairs to retrieve among: a manifest or WebDataset shards, whole or its held-out split."""

    kind: Literal["manifest", "webdataset"]
    path: str
    split: Split = "all"
    holdout: float = 0.0
    image_key: str = "image"
    caption_key: str = "caption"
    image_root: Path | None = None

    @classmethod
    def named(cls, path: str, cfg: TrainConfig | None = None) -> RetrievalSource:
        """A separate set: a CSV/JSONL manifest by its suffix, else shards (pattern or shard list)."""
        data = cfg.data if cfg is not None else DataConfig()
        is_manifest = Path(path).suffix.lower() in MANIFEST_SUFFIXES
        return cls(
            "manifest" if is_manifest else "webdataset",
            path,
            image_key=data.image_key,
            caption_key=data.caption_key,
        )

    @classmethod
    def heldout_of(cls, cfg: TrainConfig) -> RetrievalSource | None:
        """The training data's held-out split, when the config has one."""
        data = cfg.data
        if data.kind == "synthetic" or not data.holdout or data.path is None:
            return None
        return cls(
            data.kind, data.path, "heldout", data.holdout, data.image_key, data.caption_key, data.image_root
        )

    def groups(self) -> Iterator[tuple[str, Image.Image, list[str]]]:
        """Each image once, named (its path as the manifest writes it, or its ordinal among the shards' split)
        and with all of its captions (rows of a manifest naming the same image)."""
        if self.kind == "manifest":
            pairs = ManifestPairs(
                Path(self.path),
                image_root=self.image_root,
                image_key=self.image_key,
                caption_key=self.caption_key,
                split=self.split,
                holdout=self.holdout,
            )
            captions: dict[str, list[str]] = {}
            first: dict[str, int] = {}
            for index, record in enumerate(pairs.records):
                captions.setdefault(record.image, []).append(record.caption)
                first.setdefault(record.image, index)
            for image, index in first.items():
                yield image, pairs[index][0], captions[image]
            return
        stream = WebDatasetPairs(self.path, split=self.split, holdout=self.holdout, split_by_node=False)
        for ordinal, item in enumerate(item for item in stream if item is not None):
            yield str(ordinal), item[0], [item[1]]

    def list_header(self) -> str:
        """What the sha256 of the list starts from: the shards themselves for WebDataset."""
        shards = "\n".join(expand_shards(self.path)) if self.kind == "webdataset" else self.path
        return f"retrieval-set-v1\n{self.kind}\n{shards}\n{self.split}\t{self.holdout!r}\n"

    def describe(self) -> str:
        return f"{self.path} ({'held-out split ' + str(self.holdout) if self.split == 'heldout' else 'all'})"


# ----------------------------------------------------------------------------------------------- sets


@dataclass(frozen=True)
class EvaluationSets:
    """What to evaluate on; ``templates`` turn the zero-shot set's class names into prompts."""

    templates: tuple[str, ...]
    zero_shot: LabelledSet | None = None
    retrieval: RetrievalSource | None = None
    max_images: int = 0

    @classmethod
    def for_config(
        cls,
        cfg: TrainConfig | None,
        templates: Sequence[str],
        zero_shot: str | Path | None = None,
        classes: Path | None = None,
        retrieval: str | None = None,
    ) -> EvaluationSets:
        """Sets named here, else in the training config's ``evaluation`` section; retrieval falls back to
        the training data's held-out split. ``cfg`` is None for a bundle (no training config)."""
        ev = cfg.evaluation if cfg is not None else EvaluationConfig()
        zero_shot = zero_shot or ev.zero_shot
        labelled = None
        if zero_shot is not None:
            labelled = LabelledSet.read(
                zero_shot, classes or ev.classes, image_key=ev.image_key, label_key=ev.label_key
            )
        named = retrieval or ev.retrieval
        if named:
            source: RetrievalSource | None = RetrievalSource.named(named, cfg)
        else:
            source = RetrievalSource.heldout_of(cfg) if cfg is not None else None
        return cls(tuple(templates), labelled, source, ev.max_images)

    def require(self, what: str) -> EvaluationSets:
        if self.zero_shot is None and self.retrieval is None:
            raise EvaluationError(
                f"{what} needs evaluation data: pass --eval-set DIR (an image folder per class) or "
                "--retrieval-set MANIFEST|SHARDS, set evaluation.zero_shot / evaluation.retrieval in the "
                "config, or train with data.holdout > 0 so that a held-out split exists"
            )
        return self


# ----------------------------------------------------------------------------------------- evaluation


def _batched(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def encode_images(
    encoders: Encoders, images: Iterable[Image.Image], total: int | None, desc: str, progress: bool
) -> torch.Tensor:
    chunks = []
    with tqdm(total=total, desc=desc, unit="image", disable=not progress) as bar:
        for batch in _batched(images, IMAGE_BATCH):
            chunks.append(encoders.encode_images(batch))
            bar.update(len(batch))
    return torch.cat(chunks) if chunks else torch.empty(0, 0)


@dataclass
class ZeroShotResult:
    metrics: dict[str, float]
    confusion: np.ndarray
    predictions: np.ndarray
    data: EvaluationData


def evaluate_zero_shot(
    encoders: Encoders, labelled: LabelledSet, templates: Sequence[str], progress: bool = True
) -> ZeroShotResult:
    """Top-1/top-5 over the set's classes, with prompt ensembling over ``templates``."""
    image_emb = encode_images(encoders, labelled.images(), len(labelled), "zero-shot images", progress)
    classifier = build_classifier(encoders.encode_texts, labelled.class_names, templates, progress=progress)
    scores = zero_shot_scores(image_emb, classifier)
    labels = torch.tensor(labelled.labels)
    metrics = topk_accuracy(scores, labels)
    predictions = scores.argmax(dim=1).numpy()
    confusion = confusion_matrix(labels.numpy(), predictions, len(labelled.class_names))
    data = EvaluationData(
        kind="zero_shot",
        source=str(labelled.source),
        split="all",
        images=len(labelled),
        texts=len(labelled.class_names),
        sha256=labelled.sha256(),
        metrics=tuple(metrics),
    )
    return ZeroShotResult(metrics, confusion, predictions, data)


def evaluate_retrieval(
    encoders: Encoders, source: RetrievalSource, max_images: int = 0, progress: bool = True
) -> tuple[dict[str, float], EvaluationData]:
    """Recall@1/5/10 image->text and text->image; an image with several captions is one candidate."""
    captions: list[str] = []
    owners: list[int] = []
    digest = hashlib.sha256(source.list_header().encode())

    def images() -> Iterator[Image.Image]:
        groups = source.groups()
        for index, (name, image, texts) in enumerate(itertools.islice(groups, max_images or None)):
            captions.extend(texts)
            owners.extend([index] * len(texts))
            for text in texts:
                digest.update(f"{name}\t{text}\n".encode())
            yield image

    image_emb = encode_images(encoders, images(), max_images or None, "retrieval images", progress)
    if not captions:
        raise EvaluationError(f"retrieval set {source.describe()} holds no pairs")
    text_emb = torch.cat([encoders.encode_texts(batch) for batch in _batched(captions, 256)])
    metrics = retrieval_recall(image_emb, text_emb, text_image=torch.tensor(owners))
    data = EvaluationData(
        kind="retrieval",
        source=source.path,
        split="heldout" if source.split == "heldout" else "all",
        images=len(image_emb),
        texts=len(captions),
        sha256=digest.hexdigest(),
        metrics=tuple(metrics),
    )
    return metrics, data


def evaluate_sets(encoders: Encoders, sets: EvaluationSets, progress: bool = True) -> Evaluation:
    """Every set in ``sets``, as one :class:`Evaluation` (metrics, confusion of the zero-shot set, data)."""
    metrics: dict[str, float] = {}
    data: list[EvaluationData] = []
    confusion, class_names = None, []
    if sets.zero_shot is not None:
        labelled = sets.zero_shot.limit(sets.max_images)
        result = evaluate_zero_shot(encoders, labelled, sets.templates, progress)
        metrics.update(result.metrics)
        metrics["eval_images"] = len(labelled)
        confusion, class_names = result.confusion, labelled.class_names
        data.append(result.data)
    if sets.retrieval is not None:
        recall, described = evaluate_retrieval(encoders, sets.retrieval, sets.max_images, progress)
        metrics.update(recall)
        metrics.update({"retrieval_images": described.images, "retrieval_texts": described.texts})
        data.append(described)
    return Evaluation(metrics, confusion, class_names, [], data)


# -------------------------------------------------------------------------------- export check inputs


@dataclass
class CheckInputs:
    """Real images and texts to compare ONNX Runtime with torch on, and where they came from."""

    images: list[Image.Image] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


def images_in(folder: Path, limit: int) -> list[Image.Image]:
    """Up to ``limit`` images from a folder (recursively, sorted by path)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"--check-images {folder} is not a folder: give a folder of images")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise EvaluationError(f"--check-images {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    images = []
    for path in paths[:limit]:
        try:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as exc:
            raise EvaluationError(f"check image {path} cannot be read ({exc}): fix or remove it") from None
    return images


def check_inputs(sets: EvaluationSets, check_images: Path | None = None, limit: int = 64) -> CheckInputs:
    """Check images from ``check_images``, else from the evaluation sets; texts from the class prompts
    and held-out captions. Refuses, saying what to give, when there are no images."""
    inputs = CheckInputs()
    if sets.zero_shot is not None:
        labelled = sets.zero_shot.limit(limit)
        inputs.texts += [sets.templates[0].replace("{}", name, 1) for name in labelled.class_names]
        if check_images is None:
            inputs.images += list(labelled.images())
            inputs.sources.append(f"zero-shot set {labelled.source}")
    if sets.retrieval is not None:
        for _, image, texts in itertools.islice(sets.retrieval.groups(), limit):
            inputs.texts += texts
            if check_images is None and len(inputs.images) < 2 * limit:
                inputs.images.append(image)
        if check_images is None:
            inputs.sources.append(f"retrieval set {sets.retrieval.describe()}")
    if check_images is not None:
        inputs.images = images_in(check_images, limit)
        inputs.sources = [f"--check-images {check_images}"]
    if not inputs.images:
        raise EvaluationError(
            "no check images: pass --check-images DIR, or --eval-set DIR / --retrieval-set MANIFEST, "
            "or train with data.holdout > 0"
        )
    if not inputs.texts:
        inputs.texts = [template.replace("{}", "thing", 1) for template in sets.templates]
    inputs.texts = list(dict.fromkeys(inputs.texts))[: 4 * limit]
    return inputs
