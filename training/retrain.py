"""The retraining chain for CI: train, export a candidate, gate it, publish and promote it, report.

1. **Train**: LiT tuning with :func:`training.recipes.tune_and_evaluate` on the config's data (for the
   synthetic world, a built-in image tower whose weights file is missing is pretrained first with the
   demo tower recipe, at the config's sizes).
2. **Candidate**: :func:`training.export.export_bundle` into ``<out>/candidate``, a model repository of
   its own, so the ONNX graphs are verified against torch before anything is scored.
3. **Gate**: the candidate's ONNX bundle *and* the target repository's active version of the same
   bundle are scored by the same code on the same images, each with the prompt templates it serves
   with: on the user's data, the evaluation set the operator names (:class:`GateData`: zero-shot top-1
   over their classes, or a retrieval recall); on the synthetic world, its evaluation split, gated on
   zero-shot top-1 over the held-out combinations never seen in a caption. It fails when the gated
   metric is below ``min_accuracy`` or more than ``max_regression`` below the active version's.
4. **Publish and promote** (only when the gate passed): the same request is exported into the target
   repository and promoted (publish and promote are atomic); export is deterministic, and the report
   records that the published files have the gated candidate's sha256. A failed gate writes nothing
   there: the rejected candidate stays in ``<out>/candidate`` for inspection.
5. **Report**: ``retrain.md`` and ``retrain.json`` (checks, metrics of both models, versions, timings),
   written by :mod:`training.retrain_report`.

A dry run does all of this on a small built-in config, for a bundle named ``<name>_dryrun``, in a
temporary copy of the repository. :class:`RetrainOptions` holds what a run is asked (the command line
builds it once); the LiT config is loaded once and what the chain sets in it is typed, not ``key=value``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from lit_bundle.repository import Bundle, active_version, load_bundle
from lit_bundle.triton import TritonOptions
from training.config import PretrainConfig, TrainConfig, load_config, with_updates
from training.data.synthetic import SyntheticPairs
from training.encoders import BundleEncoders
from training.evaluate import build_classifier, topk_accuracy, zero_shot_scores
from training.export import export_bundle
from training.export_checkpoint import request_from_checkpoint
from training.model import image_pretrained
from training.pretrain import pretrain_tower
from training.recipes import (
    TOWER_FILE,
    builtin_config,
    demo_pretrain_config,
    split_overrides,
    tune_and_evaluate,
)
from training.retrain_report import write_report
from training.sources import world_for
from training.templates import load_templates
from training.user_eval import EvaluationSets, evaluate_sets

GATE_METRIC = "heldout_top1"
DEFAULT_CONFIG = builtin_config("demo.yaml")
DRY_RUN_CONFIG = builtin_config("retrain_dryrun.yaml")
# Tower pretraining budget of a dry run (the tower's sizes come from the LiT config).
DRY_RUN_PRETRAIN: dict[str, Any] = {"steps": 1200, "batch_size": 64, "train_size": 8000}
DRY_RUN_SUFFIX = "_dryrun"
_EPSILON = 1e-9  # a drop of exactly max_regression passes despite float rounding


class RetrainError(ValueError):
    """The retraining run cannot start or finish as asked; the message says what to change."""


# ------------------------------------------------------------------------------------------------ gate


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def gate_checks(
    candidate: float,
    min_accuracy: float,
    max_regression: float,
    previous: float | None = None,
    previous_version: int | None = None,
    metric: str = GATE_METRIC,
) -> list[Check]:
    """The gate on ``metric``: a floor, and no regression beyond ``max_regression`` vs the active."""
    floor_ok = bool(candidate >= min_accuracy)  # False for NaN
    checks = [
        Check(
            "min_accuracy",
            floor_ok,
            f"{metric} {candidate:.4f} {'>=' if floor_ok else 'is below the'} minimum {min_accuracy:.4f}",
        )
    ]
    if previous is None:
        checks.append(Check("regression", True, "no active version of this bundle to compare with"))
        return checks
    drop = previous - candidate
    ok = bool(drop <= max_regression + _EPSILON)
    change = "no change" if drop == 0 else f"a {'drop' if drop > 0 else 'gain'} of {abs(drop):.4f}"
    checks.append(
        Check(
            "regression",
            ok,
            f"{metric} {candidate:.4f} vs {previous:.4f} of the active v{previous_version} on the same "
            f"images: {change}, {'within' if ok else 'more than'} the allowed {max_regression:.4f}",
        )
    )
    return checks


class GateSet(Protocol):
    """The images both models are scored on, the same for both, and the metric that decides."""

    metric: str
    description: dict[str, Any]

    def score(self, bundle: Bundle) -> dict[str, float]: ...


@dataclass(frozen=True)
class SyntheticGateSet:
    """The config's synthetic evaluation split; gated on top-1 over the held-out combinations."""

    images: list[Image.Image]
    labels: np.ndarray
    heldout: np.ndarray
    class_names: list[str]
    description: dict[str, Any]
    metric: str = GATE_METRIC

    @classmethod
    def for_config(cls, cfg: TrainConfig) -> SyntheticGateSet:
        world = world_for(cfg.data)
        data = SyntheticPairs(world, "eval", cfg.data.synthetic.eval_size)
        heldout = np.isin(data.labels, world.heldout_classes)
        summary = (
            f"{len(data)} images of the synthetic evaluation split, world seed {world.seed}, "
            f"{world.image_size} px; {int(heldout.sum())} of held-out classes"
        )
        description: dict[str, Any] = {"data": "synthetic evaluation split", "summary": summary}
        images = [data[i][0] for i in range(len(data))]
        return cls(images, data.labels, heldout, world.class_names, description)

    def score(self, bundle: Bundle, batch_size: int = 256) -> dict[str, float]:
        """Zero-shot top-1 (all, held-out and seen classes) of a bundle's ONNX encoders, as served."""
        encoders = BundleEncoders(bundle)
        chunks = [self.images[start : start + batch_size] for start in range(0, len(self.images), batch_size)]
        image_emb = torch.cat([encoders.encode_images(chunk) for chunk in chunks])
        classifier = build_classifier(
            encoders.encode_texts, self.class_names, bundle.manifest.templates, progress=False
        )
        scores = zero_shot_scores(image_emb, classifier)
        labels, heldout = torch.from_numpy(self.labels), torch.from_numpy(self.heldout)
        subsets = (("", torch.ones_like(heldout)), ("heldout_", heldout), ("seen_", ~heldout))
        return {f"{p}top1": topk_accuracy(scores[m], labels[m], ks=(1,))["top1"] for p, m in subsets}


GATE_METRICS = ("top1", "top5", "i2t_r1", "t2i_r1", "i2t_r5", "t2i_r5")


@dataclass
class DataGateSet:
    """The operator's evaluation data: zero-shot top-1 over their classes, or a retrieval recall."""

    sets: EvaluationSets
    metric: str
    description: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_sets(cls, sets: EvaluationSets, metric: str | None) -> DataGateSet:
        metric = metric or ("top1" if sets.zero_shot is not None else "i2t_r1")
        needs = "zero_shot" if metric.startswith("top") else "retrieval"
        if metric not in GATE_METRICS:
            raise RetrainError(f"unknown gate metric {metric!r}: choose one of {', '.join(GATE_METRICS)}")
        if getattr(sets, needs) is None:
            given = (
                "--eval-set DIR (an image folder per class)" if needs == "zero_shot" else "--retrieval-set"
            )
            raise RetrainError(f"gate metric {metric} needs {needs.replace('_', '-')} data: pass {given}")
        parts = []
        if sets.zero_shot is not None:
            z = sets.zero_shot
            parts.append(f"zero-shot set {z.source} ({len(z)} images, {len(z.class_names)} classes)")
        if sets.retrieval is not None:
            parts.append(f"retrieval set {sets.retrieval.describe()}")
        return cls(sets, metric, {"data": "; ".join(parts), "summary": "; ".join(parts)})

    def score(self, bundle: Bundle) -> dict[str, float]:
        """Every metric of the sets, through the bundle's ONNX encoders with its own templates."""
        sets = replace(self.sets, templates=tuple(bundle.manifest.templates))
        evaluation = evaluate_sets(BundleEncoders(bundle), sets, progress=False)
        keys = [key for data in evaluation.data for key in data.metrics]
        self.description["evaluation_data"] = [d.model_dump() for d in evaluation.data]
        return {key: float(evaluation.metrics[key]) for key in keys}


class GateData(BaseModel):
    """The evaluation data the operator names for the gate (none: the synthetic world's, for synthetic
    configs). ``metric`` defaults to zero-shot top-1 with a labelled set, else image->text R@1."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    eval_set: str | None = None
    classes: Path | None = None
    retrieval_set: str | None = None
    metric: str | None = None

    def gate_set(self, cfg: TrainConfig) -> GateSet:
        named = self.eval_set or self.retrieval_set or cfg.evaluation.zero_shot or cfg.evaluation.retrieval
        if cfg.data.kind == "synthetic" and not named:
            if self.metric not in (None, GATE_METRIC):
                raise RetrainError(f"on the synthetic world the gate metric is {GATE_METRIC}")
            return SyntheticGateSet.for_config(cfg)
        if not named:
            raise RetrainError(
                "retraining on your own data gates on an evaluation set you name: pass --eval-set DIR "
                "(an image folder per class, or a CSV/JSONL of image,label) or --retrieval-set "
                "MANIFEST|SHARDS, or set evaluation.zero_shot / evaluation.retrieval in the config"
            )
        templates = load_templates(cfg.templates)
        sets = EvaluationSets.for_config(cfg, templates, self.eval_set, self.classes, self.retrieval_set)
        if not self.retrieval_set and not cfg.evaluation.retrieval:
            sets = replace(sets, retrieval=None)  # a held-out split is the candidate's own: not a fair gate
        return DataGateSet.for_sets(sets, self.metric)


# ----------------------------------------------------------------------------------------------- chain


class RetrainOptions(BaseModel):
    """Everything one retraining run is asked to do (``lit-train retrain`` builds it from its flags).

    A dry run works on a temporary copy of ``repository`` (in ``<out>/repository``), for the bundle
    ``<name>_dryrun``, with the small built-in config unless ``config`` is given. ``overrides`` are the
    user's ``key=value`` strings; ``pretrain.key=value`` ones configure a tower pretraining.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    repository: Path = Path("model_repository")
    name: str = "lit_demo"
    config: Path | None = Field(default=None, description="default: the demo's; a dry run's small one")
    overrides: tuple[str, ...] = ()
    gate: GateData = Field(default_factory=GateData)
    min_accuracy: float = Field(default=0.8, ge=0.0)
    max_regression: float = Field(default=0.01, ge=0.0)
    out: Path | None = Field(default=None, description="a new run folder (default: runs/retrain/<time>)")
    report_dir: Path | None = Field(default=None, description="default: <out>/report")
    dry_run: bool = False
    progress: bool = True

    @property
    def config_file(self) -> Path:
        return self.config or (DRY_RUN_CONFIG if self.dry_run else DEFAULT_CONFIG)


@dataclass
class RetrainResult:
    """The outcome of a run, with the :class:`RetrainOptions` it ran with; ``bundle``, ``repository``
    and ``config`` are the ones used (for a dry run: ``<name>_dryrun`` in the temporary copy)."""

    options: RetrainOptions
    bundle: str
    repository: Path
    passed: bool
    checks: list[Check]
    gate_metric: str
    gate_set: dict[str, Any]
    candidate: dict[str, float]
    training_metrics: dict[str, float]
    previous_version: int | None
    previous: dict[str, float] | None
    new_version: int | None
    active_version: int | None
    out: Path
    checkpoint: Path
    config: Path
    source_repository: Path | None = None
    published_identical_to_gated: bool | None = None
    timings: dict[str, float] = field(default_factory=dict)
    report: dict[str, Path] = field(default_factory=dict)


@contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    began = time.perf_counter()
    yield
    timings[key] = round(time.perf_counter() - began, 1)


def _missing_tower(cfg: TrainConfig) -> bool:
    """A pretrained built-in image tower whose weights file is not there."""
    image = cfg.model.image
    weights = Path(image.weights) if image.weights is not None else None
    present = weights is not None and weights.is_file()
    return image.kind == "builtin" and image_pretrained(cfg.model.mode) and not present


def tower_config(cfg: TrainConfig, tower: Path, overrides: Sequence[str], dry_run: bool) -> PretrainConfig:
    """The demo tower recipe for ``cfg``'s tower and world (a dry run: at its small budget), saving to
    ``tower``; the user's ``pretrain.*`` ``overrides`` (prefix removed) win over both."""
    defaults: dict[str, Any] = {
        "image.image_size": cfg.model.image.image_size,
        "image.width": cfg.model.image.width,
        "image.pooling": cfg.model.image.pooling,
        "data.image_size": cfg.data.synthetic.image_size,
        "data.version": cfg.data.synthetic.version,
    }
    if dry_run:
        defaults.update(DRY_RUN_PRETRAIN)
    return demo_pretrain_config(tower, overrides, defaults)


def training_config(options: RetrainOptions, out: Path, timings: dict[str, float]) -> TrainConfig:
    """The LiT config with its run folder in ``out``; pretrains a missing built-in tower into ``out``.

    ``pretrain.*`` overrides configure that pretraining, as for ``lit-train demo``. A dry run keeps its
    feature cache in ``out`` unless the overrides say otherwise.
    """
    pretrain_overrides, overrides = split_overrides(options.overrides)
    defaults = {"cache_dir": out / "cache"} if options.dry_run else None
    cfg = load_config(TrainConfig, options.config_file, overrides, defaults)
    updates: dict[str, Any] = {"out_dir": out / "lit"}
    if _missing_tower(cfg):
        if cfg.data.kind != "synthetic":
            raise RetrainError(
                f"the built-in image tower's weights {cfg.model.image.weights} do not exist: on your own "
                "data, give model.image.weights a pretrained tower file, or use a timm or hf tower "
                "(model.image.kind)"
            )
        tower = out / TOWER_FILE
        pretrain_cfg = tower_config(cfg, tower, pretrain_overrides, options.dry_run)
        with _timed(timings, "pretrain_tower"):
            pretrain_tower(pretrain_cfg, progress=options.progress)
        updates["model.image.weights"] = tower
    return with_updates(cfg, updates)


def _fresh_out(out: Path | None, dry_run: bool) -> Path:
    if out is None:
        if dry_run:
            return Path(tempfile.mkdtemp(prefix="lit-retrain-dryrun-"))
        out = Path("runs/retrain") / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    if out.exists() and any(out.iterdir()):
        raise RetrainError(
            f"{out} is not empty: give --out a new folder "
            "(each run keeps its checkpoint, candidate bundle and report there)"
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


def _file_hashes(bundle: Bundle) -> list[str]:
    m = bundle.manifest
    return [m.files[m.image_encoder.file], m.files[m.text_encoder.file], m.files[m.text.tokenizer]]


def retrain(options: RetrainOptions, *, triton: TritonOptions | None = None) -> RetrainResult:
    """Run the chain; the result says whether the gate passed (the caller turns that into an exit code).

    ``triton`` regenerates both ``config.pbtxt`` from these settings on promotion; None keeps their
    operator settings (as for ``lit-train promote``).
    """
    began = time.perf_counter()
    timings: dict[str, float] = {}
    progress, gate = options.progress, options.gate
    out = _fresh_out(options.out, options.dry_run)
    name, repository, source = options.name, options.repository, None
    if options.dry_run:
        name, source, repository = name + DRY_RUN_SUFFIX, repository, out / "repository"
        if source.is_dir():
            shutil.copytree(source, repository)
        else:
            repository.mkdir()

    cfg = training_config(options, out, timings)
    data = gate.gate_set(cfg)  # before training: a wrong gate option fails at once
    with _timed(timings, "train"):
        summary = tune_and_evaluate(cfg, progress=progress, title=f"Retraining {name}")
    with _timed(timings, "export_candidate"):
        request = request_from_checkpoint(
            summary.checkpoint,
            name,
            progress=progress,
            zero_shot=gate.eval_set,
            classes=gate.classes,
            retrieval=gate.retrieval_set,
        )
        candidate_repo = out / "candidate"
        candidate_version = export_bundle(request, candidate_repo, activate=True).version
        candidate = load_bundle(candidate_repo, name, candidate_version)

    with _timed(timings, "gate"):
        candidate_scores = data.score(candidate)
        previous_version = active_version(repository, name)
        previous_scores = None
        if previous_version is not None:
            previous_scores = data.score(load_bundle(repository, name, previous_version))
        checks = gate_checks(
            candidate_scores[data.metric],
            options.min_accuracy,
            options.max_regression,
            previous_scores[data.metric] if previous_scores else None,
            previous_version,
            data.metric,
        )
    passed = all(c.passed for c in checks)

    new_version, identical = None, None
    if passed:
        with _timed(timings, "publish"):
            request.metrics.update({f"gate_{k}": v for k, v in candidate_scores.items()})
            new_version = export_bundle(request, repository, triton=triton, activate=True).version
            identical = _file_hashes(load_bundle(repository, name, new_version)) == _file_hashes(candidate)
    timings["total"] = round(time.perf_counter() - began, 1)

    result = RetrainResult(
        options=options,
        bundle=name,
        repository=repository,
        passed=passed,
        checks=checks,
        gate_metric=data.metric,
        gate_set=data.description,
        candidate=candidate_scores,
        training_metrics={k: float(v) for k, v in summary.evaluation.metrics.items()},
        previous_version=previous_version,
        previous=previous_scores,
        new_version=new_version,
        active_version=active_version(repository, name),
        out=out,
        checkpoint=summary.checkpoint,
        config=options.config_file,
        source_repository=source,
        published_identical_to_gated=identical,
        timings=timings,
    )
    result.report = write_report(result, options.report_dir or out / "report")
    return result
