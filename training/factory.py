"""Build LiT models from config, fresh for training or restored from a checkpoint."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from training.checkpoint import load_weights
from training.config import ModelConfig, TrainConfig
from training.model import LiTModel, image_pretrained, text_pretrained
from training.towers import build_image_tower, build_text_tower
from training.towers.base import ImageTower


def build_model(
    cfg: ModelConfig,
    loss_kind: str,
    corpus: Iterable[str] | None = None,
    tokenizer_file: Path | None = None,
    load_pretrained: bool = True,
    image_tower: ImageTower | None = None,
) -> LiTModel:
    """A LiT model for ``cfg.mode``; ``load_pretrained=False`` skips pretrained weights (restoring)."""
    image = image_tower or build_image_tower(
        cfg.image, pretrained=load_pretrained and image_pretrained(cfg.mode)
    )
    text = build_text_tower(
        cfg.text,
        pretrained=load_pretrained and text_pretrained(cfg.mode),
        corpus=corpus,
        tokenizer_file=tokenizer_file,
    )
    return LiTModel(image, text, cfg.mode, loss_kind, embed_dim=cfg.embed_dim, image_head=cfg.image_head)


def load_trained(checkpoint: Path) -> tuple[LiTModel, TrainConfig]:
    """Restore a trained model (weights, tokenizer and config) from a checkpoint folder."""
    checkpoint = Path(checkpoint)
    if not (checkpoint / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{checkpoint} is not a checkpoint (no model.safetensors): pass a checkpoint folder such as "
            "step-0001200, or a run folder holding a 'latest' file"
        )
    cfg = TrainConfig.model_validate(json.loads((checkpoint / "config.json").read_text()))
    model = build_model(
        cfg.model, cfg.loss.kind, tokenizer_file=checkpoint / "tokenizer.json", load_pretrained=False
    )
    load_weights(model, checkpoint)
    return model.eval(), cfg
