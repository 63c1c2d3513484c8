"""Zero-shot evaluation of a LiT model: classification with prompt ensembling, plus retrieval."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from lit_bundle.manifest import EvaluationData
from training.data.pairs import collate_pairs, pixel_transform
from training.data.synthetic import SyntheticPairs, SyntheticWorld
from training.evaluate import (
    build_classifier,
    confusion_matrix,
    retrieval_recall,
    topk_accuracy,
    write_report,
    zero_shot_scores,
)
from training.model import LiTModel


@dataclass
class Evaluation:
    metrics: dict[str, float]
    confusion: np.ndarray | None
    class_names: list[str]
    highlight: list[int]
    data: list[EvaluationData] = field(default_factory=list)


def _device(model: LiTModel) -> torch.device:
    return next(model.parameters()).device


def text_encoder(model: LiTModel):
    """``list[str] -> (N, D)`` normalised text embeddings, for ``build_classifier``."""

    def encode(texts: list[str]) -> torch.Tensor:
        tokens = model.text_tower.tokenize(texts)
        device = _device(model)
        return model.encode_text(tokens["input_ids"].to(device), tokens["attention_mask"].to(device)).cpu()

    return encode


@torch.no_grad()
def encode_dataset(
    model: LiTModel, dataset: Dataset, batch_size: int = 256, workers: int = 0, progress: bool = True
) -> tuple[torch.Tensor, list[str]]:
    """Normalised image embeddings and captions of every (usable) item of ``dataset``."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_pairs)
    embeddings, captions = [], []
    for batch in tqdm(loader, desc="encoding evaluation images", disable=not progress):
        if batch.captions:
            embeddings.append(model.encode_image(batch.pixels.to(_device(model))).cpu())
            captions.extend(batch.captions)
    return torch.cat(embeddings), captions


@torch.no_grad()
def evaluate_synthetic(
    model: LiTModel, world: SyntheticWorld, size: int, templates: Sequence[str], progress: bool = True
) -> Evaluation:
    """Top-1/top-5 among all the world's (shape, colour) classes, split into held-out and seen combinations;
    in version 2 also top-1 with every class named by its held-out synonyms (``heldout_word_top1``)."""
    dataset = SyntheticPairs(world, "eval", size, pixel_transform(model.image_tower.preprocess))
    image_emb, captions = encode_dataset(model, dataset, progress=progress)
    encode = text_encoder(model)
    classifier = build_classifier(encode, world.class_names, templates, progress=progress)
    scores = zero_shot_scores(image_emb, classifier)
    labels = torch.from_numpy(np.asarray(dataset.labels))
    heldout = torch.from_numpy(np.isin(dataset.labels, world.heldout_classes))
    metrics: dict[str, float] = {}
    for name, mask in (("", torch.ones_like(heldout)), ("heldout_", heldout), ("seen_", ~heldout)):
        for key, value in topk_accuracy(scores[mask], labels[mask]).items():
            metrics[f"{name}{key}"] = value
    if world.version == 2:  # words the text tower never saw in training, for the same images
        words = build_classifier(encode, world.heldout_word_class_names("both"), templates, progress=False)
        metrics["heldout_word_top1"] = topk_accuracy(zero_shot_scores(image_emb, words), labels)["top1"]
    caption_emb = torch.cat([encode(list(chunk)) for chunk in _chunks(captions, 512)])
    metrics.update(retrieval_recall(image_emb, caption_emb))
    metrics["eval_images"] = len(labels)
    confusion = confusion_matrix(labels.numpy(), scores.argmax(-1).numpy(), len(world.class_names))
    return Evaluation(metrics, confusion, list(world.class_names), list(world.heldout_classes))


def _chunks(items: list[str], size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def report(evaluation: Evaluation, out_dir: Path, title: str, history=None) -> dict[str, Path]:
    return write_report(
        out_dir,
        title,
        evaluation.metrics,
        class_names=evaluation.class_names or None,
        confusion=evaluation.confusion,
        history=history,
        highlight_classes=evaluation.highlight,
        data=[d.model_dump() for d in evaluation.data],
    )
