"""Zero-shot top-1 on the second renderer's out-of-distribution set, overall and by background brightness.

The set is rendered in memory (:mod:`training.data.second_renderer`) and scored by the same zero-shot code
as any labelled folder (prompt-ensembled classifier over all 64 classes, pessimistic ties), so the figure
equals ``lit-train evaluate MODEL --eval-set`` on the folder ``lit-train ood-set`` writes; the light/dark
split shows how much of the gap is the background the training world never had.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence

import torch
from PIL import Image

from training.data.second_renderer import DEFAULT_SIZE, class_names, render_set
from training.encoders import Encoders
from training.evaluate import build_classifier, topk_accuracy, zero_shot_scores
from training.user_eval import encode_images

KEYS = ("top1", "light_top1", "dark_top1")


def ood_top1(
    encoders: Encoders,
    templates: Sequence[str],
    per_class: int = 20,
    seed: int = 0,
    size: int = DEFAULT_SIZE,
    progress: bool = False,
) -> dict[str, float]:
    """``{"top1", "light_top1", "dark_top1"}`` of ``encoders`` on one seed of the set (64 x ``per_class``
    images, half on light backgrounds)."""
    names = class_names()
    index = {name: i for i, name in enumerate(names)}
    labels: list[int] = []
    light: list[bool] = []

    def images() -> Iterator[Image.Image]:
        for item in render_set(per_class, seed, size):
            labels.append(index[item.label])
            light.append(item.light)
            yield item.image

    image_emb = encode_images(encoders, images(), per_class * len(names), "OOD images", progress)
    classifier = build_classifier(encoders.encode_texts, names, templates, progress=progress)
    scores = zero_shot_scores(image_emb, classifier)
    targets, is_light = torch.tensor(labels), torch.tensor(light)
    return {
        "top1": topk_accuracy(scores, targets, ks=(1,))["top1"],
        "light_top1": topk_accuracy(scores[is_light], targets[is_light], ks=(1,))["top1"],
        "dark_top1": topk_accuracy(scores[~is_light], targets[~is_light], ks=(1,))["top1"],
    }


def summarise(runs: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per key: mean, sample standard deviation (0 for one run), min and max over the runs."""
    out = {}
    for key in KEYS:
        values = [run[key] for run in runs]
        out[key] = {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values),
            "max": max(values),
        }
    return out
