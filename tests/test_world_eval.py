"""The synthetic world's final evaluation over several seeds (training/world_eval.py)."""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path

import pytest

from tests.helpers import tiny_checkpoint
from training.encoders import TorchEncoders
from training.factory import load_trained
from training.ood_eval import ood_top1
from training.sources import world_for
from training.templates import load_templates
from training.world_eval import evaluate_world
from training.zero_shot import evaluate_synthetic


def test_figures_are_means_over_seeds_with_their_spread(tmp_path: Path) -> None:
    model, cfg = load_trained(tiny_checkpoint(tmp_path))
    data = cfg.data.model_copy(
        update={"synthetic": cfg.data.synthetic.model_copy(update={"eval_size": 48, "eval_seeds": 2})}
    )
    templates = load_templates(cfg.templates)
    result = evaluate_world(model, data, templates)
    world = world_for(data)
    runs = []
    for k in range(
        2
    ):  # what each seed scores on its own: its world's evaluation split, the renderer's seed k
        metrics = evaluate_synthetic(model, replace(world, seed=world.seed + k), 48, templates, False).metrics
        metrics.update(
            {f"ood_{key}": v for key, v in ood_top1(TorchEncoders(model), templates, seed=k).items()}
        )
        runs.append(metrics)
    assert result.metrics["eval_seeds"] == 2
    for key in ("top1", "heldout_top1", "ood_top1", "ood_light_top1"):
        values = [run[key] for run in runs]
        assert result.metrics[key] == pytest.approx(statistics.fmean(values))
        assert result.metrics[f"{key}_std"] == pytest.approx(statistics.stdev(values))
    assert result.confusion is not None and result.confusion.sum() == 48  # the first seed's, for the report
