"""Turn a LiT training checkpoint into an export request (encoders, tokenizer, metrics, provenance)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from training.data.synthetic import SyntheticPairs
from training.export import ExportRequest
from training.factory import load_trained
from training.losses import MAX_LOG_SCALE
from training.model import LiTModel
from training.sources import world_for
from training.templates import load_templates
from training.zero_shot import evaluate_synthetic


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


def request_from_checkpoint(checkpoint: Path, name: str, progress: bool = True) -> ExportRequest:
    """Everything ``export_bundle`` needs; synthetic-trained models are evaluated and checked on the
    synthetic evaluation set (their metrics go into the manifest)."""
    model, cfg = load_trained(checkpoint)
    model.eval()
    templates = load_templates(cfg.templates)
    scale, bias = logit_scale_and_bias(model)
    if cfg.data.kind != "synthetic":
        raise ValueError(
            "export needs check images: only synthetic-trained checkpoints are supported by `export` so far"
        )
    world = world_for(cfg.data)
    evaluation = evaluate_synthetic(model, world, cfg.data.synthetic.eval_size, templates, progress=progress)
    metrics = {k: float(v) for k, v in evaluation.metrics.items()}
    eval_set = SyntheticPairs(world, "eval", cfg.data.synthetic.eval_size)
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
        check_images=[eval_set[i][0] for i in range(len(eval_set))],
        check_texts=[templates[0].replace("{}", c) for c in world.class_names],
        templates=tuple(templates),
        metrics=metrics,
        provenance={
            "checkpoint": str(Path(checkpoint).resolve()),
            "data": f"synthetic world seed={cfg.data.synthetic.seed} pairs={cfg.data.synthetic.train_size}",
            "mode": cfg.model.mode,
            "config": cfg.model_dump_json(),
        },
    )
