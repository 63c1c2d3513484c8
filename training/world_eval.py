"""The synthetic world's final evaluation: zero-shot on fresh evaluation images of several world seeds and
on the second renderer's out-of-distribution set, as means with their spread.

One seed's 2,048 images put a few points of sampling noise on every figure; the demo's published figures
are means over ``data.synthetic.eval_seeds`` seeds (the training world's evaluation split, then worlds
with the next seeds, whose images no training split drew), each with ``<key>_std`` beside it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import replace

from training.config import DataConfig
from training.encoders import TorchEncoders
from training.model import LiTModel
from training.ood_eval import ood_top1
from training.sources import world_for
from training.zero_shot import Evaluation, evaluate_synthetic

# Figures published with their spread over seeds.
SPREAD_KEYS = (
    "top1",
    "heldout_top1",
    "seen_top1",
    "heldout_word_top1",
    "ood_top1",
    "ood_light_top1",
    "ood_dark_top1",
)


def evaluate_world(
    model: LiTModel, data: DataConfig, templates: Sequence[str], progress: bool = False
) -> Evaluation:
    """The first seed's :class:`Evaluation` (its confusion matrix, for the report) with every metric
    replaced by its mean over the seeds, ``<key>_std`` (sample standard deviation, 0 for one seed) for the
    keys of :data:`SPREAD_KEYS` and ``eval_seeds``."""
    world = world_for(data)
    runs: list[dict[str, float]] = []
    first: Evaluation | None = None
    for k in range(data.synthetic.eval_seeds):
        evaluation = evaluate_synthetic(
            model, replace(world, seed=world.seed + k), data.synthetic.eval_size, templates, progress
        )
        ood = ood_top1(TorchEncoders(model), templates, seed=k)  # the second renderer: a world it never saw
        evaluation.metrics.update({f"ood_{key}": value for key, value in ood.items()})
        runs.append(evaluation.metrics)
        if first is None:
            first = evaluation
    assert first is not None  # eval_seeds >= 1
    metrics = {key: statistics.fmean(run[key] for run in runs) for key in first.metrics}
    for key in SPREAD_KEYS:
        if key in metrics:
            metrics[f"{key}_std"] = statistics.stdev(r[key] for r in runs) if len(runs) > 1 else 0.0
    metrics["eval_seeds"] = len(runs)
    first.metrics = metrics
    return first
