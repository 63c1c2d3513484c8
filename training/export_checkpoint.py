"""Turn a LiT training checkpoint into an export request (encoders, tokenizer, metrics, provenance)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from lit_bundle.manifest import EvaluationData, VariantPrecision
from training.config import TrainConfig
from training.data.scenes import REVISION
from training.data.synthetic import SyntheticPairs
from training.encoders import TorchEncoders
from training.export import ExportRequest
from training.factory import load_trained
from training.losses import MAX_LOG_SCALE
from training.model import LiTModel
from training.precision_gate import GateSet
from training.sources import world_for
from training.templates import load_templates
from training.user_eval import CheckInputs, EvaluationSets, check_inputs, evaluate_sets, images_in
from training.variant_data import labelled_gate_set, synthetic_gate_set, variant_request
from training.world_eval import evaluate_world
from training.zero_shot import Evaluation


class LiTImageEncoder(nn.Module):
    def __init__(self, model: LiTModel) -> None:
        super().__init__()
        self.tower, self.head = model.image_tower, model.image_head

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.tower(pixels))


class LiTTextEncoder(nn.Module):
    def __init__(self, model: LiTModel) -> None:
        super().__init__()
        self.tower, self.head = model.text_tower, model.text_head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.tower(input_ids, attention_mask))


def logit_scale_and_bias(model: LiTModel) -> tuple[float, float | None]:
    """The scale and bias the loss used, so serving reproduces training's probabilities."""
    log_scale = model.loss.log_scale.detach()
    if model.loss.bias is None:
        return float(log_scale.clamp(max=MAX_LOG_SCALE).exp()), None
    return float(log_scale.exp()), float(model.loss.bias.detach())


def _synthetic_checks(
    model: LiTModel, cfg: TrainConfig, templates: list[str], progress: bool
) -> tuple[Evaluation, CheckInputs]:
    """The synthetic evaluation split: metrics, and its images and class prompts as check inputs."""
    world = world_for(cfg.data)
    size, seeds = cfg.data.synthetic.eval_size, cfg.data.synthetic.eval_seeds
    evaluation = evaluate_world(model, cfg.data, templates, progress=progress)
    identity = f"synthetic-v1\n{world.seed}\n{world.image_size}\n{size}"  # version 1, one seed: as before
    source = f"synthetic world seed={world.seed} image_size={world.image_size}"
    if world.version != 1 or seeds != 1:
        identity += f"\nversion={world.version} revision={REVISION} seeds={seeds}"
        source += f" version={world.version} seeds={seeds} (+ second renderer)"
    evaluation.data.append(
        EvaluationData(
            kind="synthetic",
            source=source,
            split="heldout",
            images=size * seeds,
            texts=len(world.class_names),
            sha256=hashlib.sha256(identity.encode()).hexdigest(),
            metrics=tuple(evaluation.metrics),
        )
    )
    eval_set = SyntheticPairs(world, "eval", size)
    inputs = CheckInputs(
        images=[eval_set[i][0] for i in range(len(eval_set))],
        texts=[templates[0].replace("{}", c) for c in world.class_names],
        sources=["synthetic evaluation split"],
    )
    return evaluation, inputs


def training_data(cfg: TrainConfig) -> str:
    """One line naming the data a checkpoint was trained on (for the manifest's provenance)."""
    data = cfg.data
    if data.kind == "synthetic":
        return f"synthetic world seed={data.synthetic.seed} pairs={data.synthetic.train_size}"
    return f"{data.kind} {data.path} (held-out fraction {data.holdout})"


def request_from_checkpoint(
    checkpoint: Path,
    name: str,
    progress: bool = True,
    zero_shot: str | Path | None = None,
    classes: Path | None = None,
    retrieval: str | None = None,
    check_images: Path | None = None,
    precisions: Sequence[VariantPrecision] = (),
    calibration: Path | None = None,
) -> ExportRequest:
    """Everything ``export_bundle`` needs, from a checkpoint trained on any data.

    The model is evaluated on the sets named here or in its config (on the user's data: a zero-shot set,
    a retrieval set, else the training data's held-out split; for the synthetic world, its evaluation
    split); the metrics and the data they came from go into the manifest. The ONNX parity check runs on
    ``check_images`` if given, else on images of those sets. Raises ``EvaluationError`` (saying what to
    pass) when there is nothing to check with. ``precisions`` asks for lower-precision variants, calibrated
    on ``calibration`` (a folder of images) or the training data, gated on the zero-shot evaluation set.
    """
    model, cfg = load_trained(checkpoint)
    model.eval()
    templates = load_templates(cfg.templates)
    scale, bias = logit_scale_and_bias(model)
    gate: GateSet | None = None
    if cfg.data.kind == "synthetic" and not (zero_shot or retrieval or cfg.evaluation.zero_shot):
        evaluation, inputs = _synthetic_checks(model, cfg, templates, progress)
        if precisions:
            gate = synthetic_gate_set(world_for(cfg.data), cfg.data.synthetic.eval_size, templates)
        if check_images is not None:
            inputs = CheckInputs(
                images_in(check_images, 64), inputs.texts, [f"--check-images {check_images}"]
            )
    else:
        sets = EvaluationSets.for_config(cfg, templates, zero_shot, classes, retrieval)
        inputs = check_inputs(sets, check_images)
        evaluation = Evaluation({}, None, [], [])
        if sets.zero_shot is not None or sets.retrieval is not None:
            evaluation = evaluate_sets(TorchEncoders(model), sets, progress=progress)
        if precisions and sets.zero_shot is not None:
            gate = labelled_gate_set(sets.zero_shot, templates)
    return ExportRequest(
        name=name,
        image_encoder=LiTImageEncoder(model).eval(),
        text_encoder=LiTTextEncoder(model).eval(),
        tokenizer=model.text_tower.tokenizer,
        context_length=model.text_tower.context_length,
        preprocess=model.image_tower.preprocess,
        loss=cfg.loss.kind,
        logit_scale=scale,
        logit_bias=bias,
        check_images=inputs.images,
        check_texts=inputs.texts,
        templates=tuple(templates),
        metrics={k: float(v) for k, v in evaluation.metrics.items()},
        evaluation=tuple(evaluation.data),
        provenance={
            "checkpoint": str(Path(checkpoint).resolve()),
            "data": training_data(cfg),
            "check_images": "; ".join(inputs.sources),
            "mode": cfg.model.mode,
            "config": cfg.model_dump_json(),
        },
        variants=variant_request(precisions, gate, cfg, calibration),
    )
