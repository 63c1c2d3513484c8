"""Multi-stage recipes: the demo model from nothing (:mod:`training.ablation` builds on it)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from lit_bundle.atomic import write_atomic
from training.config import LitMode, PretrainConfig, TrainConfig, load_config, with_updates
from training.encoders import TorchEncoders
from training.factory import load_trained
from training.model import LiTModel
from training.pretrain import pretrain_tower
from training.sources import world_for
from training.templates import load_templates
from training.train import train
from training.user_eval import EvaluationSets, evaluate_sets
from training.world_eval import evaluate_world
from training.zero_shot import Evaluation, evaluate_synthetic, report


def builtin_config(name: str) -> Path:
    return Path(str(resources.files("training") / "configs" / name))


PERIODIC_METRICS = ("heldout_top1", "seen_top1", "top1", "i2t_r1", "t2i_r1")


def periodic_evaluator(cfg: TrainConfig, progress: bool = False):
    """An ``evaluator(model, step)`` for zero-shot evaluation every ``eval_every`` steps (its figures join
    the training history and its plots), or None when ``eval_every`` is 0 or there is nothing to score."""
    if not cfg.eval_every:
        return None
    templates = load_templates(cfg.templates)
    if cfg.data.kind == "synthetic" and not cfg.evaluation.zero_shot:
        world = world_for(cfg.data)

        def evaluate_world(model: LiTModel, step: int) -> dict[str, float]:
            result = evaluate_synthetic(model, world, cfg.data.synthetic.eval_size, templates, progress)
            return {k: result.metrics[k] for k in PERIODIC_METRICS if k in result.metrics}

        return evaluate_world
    sets = EvaluationSets.for_config(cfg, templates)
    if sets.zero_shot is None and sets.retrieval is None:
        return None

    def evaluate_data(model: LiTModel, step: int) -> dict[str, float]:
        result = evaluate_sets(TorchEncoders(model), sets, progress=progress)
        return {k: result.metrics[k] for k in PERIODIC_METRICS if k in result.metrics}

    return evaluate_data


@dataclass
class RunSummary:
    mode: LitMode
    evaluation: Evaluation
    train_seconds: float
    total_seconds: float
    cache_used: bool
    checkpoint: Path


def evaluate_trained(model: LiTModel, cfg: TrainConfig, progress: bool = True) -> Evaluation:
    """The evaluation a training run ends with: on the synthetic world, :func:`evaluate_world` (held-out
    split and the second renderer's out-of-distribution set, over ``data.synthetic.eval_seeds`` seeds), on the
    user's data the config's evaluation sets (else the held-out split; nothing when there is none)."""
    templates = load_templates(cfg.templates)
    if cfg.data.kind == "synthetic" and not cfg.evaluation.zero_shot:
        return evaluate_world(model, cfg.data, templates, progress)
    sets = EvaluationSets.for_config(cfg, templates)
    if sets.zero_shot is None and sets.retrieval is None:
        return Evaluation({}, None, [], [])
    return evaluate_sets(TorchEncoders(model), sets, progress=progress)


def tune_and_evaluate(cfg: TrainConfig, progress: bool = True, title: str = "LiT") -> RunSummary:
    began = time.perf_counter()
    result = train(cfg, progress=progress, evaluator=periodic_evaluator(cfg))
    model, _ = load_trained(result.checkpoint)  # evaluate exactly what was saved
    evaluation = evaluate_trained(model, cfg, progress)
    total = time.perf_counter() - began
    evaluation.metrics.update(
        {"train_seconds": round(result.train_seconds, 1), "total_seconds": round(total, 1)}
    )
    report(evaluation, Path(cfg.out_dir) / "report", title, history=result.history)
    return RunSummary(
        cfg.model.mode, evaluation, result.train_seconds, total, result.cache_used, result.checkpoint
    )


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """``pretrain.key=value`` overrides go to tower pretraining, the rest to LiT tuning."""
    pretrain = [o.removeprefix("pretrain.") for o in overrides if o.startswith("pretrain.")]
    return pretrain, [o for o in overrides if not o.startswith("pretrain.")]


TOWER_FILE = "tower.safetensors"


def demo_pretrain_config(
    tower: Path, overrides: Sequence[str] = (), defaults: Mapping[str, Any] | None = None
) -> PretrainConfig:
    """The demo tower's pretraining config, saving to ``tower``; ``defaults`` give way to ``overrides``."""
    cfg = load_config(PretrainConfig, builtin_config("demo_pretrain.yaml"), overrides, defaults)
    return with_updates(cfg, {"out": tower})


def demo_config(out: Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """The demo's LiT config on the tower in ``out``, the run going to ``out/lit``; ``overrides`` win."""
    out = Path(out)
    defaults: dict[str, Any] = {"out_dir": out / "lit", "model.image.weights": out / TOWER_FILE}
    return load_config(TrainConfig, builtin_config("demo.yaml"), overrides, defaults)


def build_demo(out: Path, overrides: Sequence[str] = (), progress: bool = True) -> RunSummary:
    """Pretrain the demo tower, LiT-tune the text tower on it, evaluate held-out combinations.

    Overrides starting with ``pretrain.`` configure tower pretraining; the others LiT tuning.
    """
    out = Path(out)
    pretrain_overrides, overrides = split_overrides(overrides)
    began = time.perf_counter()
    pre = pretrain_tower(demo_pretrain_config(out / TOWER_FILE, pretrain_overrides), progress=progress)
    pretrain_seconds = time.perf_counter() - began
    cfg = demo_config(out, overrides)
    summary = tune_and_evaluate(cfg, progress=progress, title="Demo LiT model")
    summary.evaluation.metrics.update(
        {
            "pretrain_seconds": round(pretrain_seconds, 1),
            "tower_shape_accuracy": pre.shape_accuracy,
            "tower_colour_accuracy": pre.colour_accuracy,
            **pre.probe.metrics(),
            "build_seconds": round(time.perf_counter() - began, 1),
        }
    )
    write_atomic(out / "summary.json", json.dumps(summary.evaluation.metrics, indent=1))
    return summary
