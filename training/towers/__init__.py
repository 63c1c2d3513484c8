"""Image and text towers, built from config.

Backends are imported lazily so that using the builtin tower never pays for importing timm or transformers.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from training.config import ImageTowerConfig, TextTowerConfig
from training.towers.base import ImageTower, TextTower, fixed_length


def build_image_tower(cfg: ImageTowerConfig, pretrained: bool = True) -> ImageTower:
    """Build the image tower.

    Weights are loaded only when both ``pretrained`` (from the LiT mode) and ``cfg.pretrained`` hold.
    """
    pretrained = pretrained and cfg.pretrained
    if cfg.kind == "builtin":
        from training.towers.builtin import build_builtin

        return build_builtin(cfg, pretrained)
    if cfg.kind == "timm":
        from training.towers.timm_tower import build_timm

        return build_timm(cfg, pretrained)
    if cfg.kind == "hf":
        from training.towers.hf_vision import build_hf_vision

        return build_hf_vision(cfg, pretrained)
    raise ValueError(f"unknown model.image.kind {cfg.kind!r} (builtin, timm or hf)")


def build_text_tower(
    cfg: TextTowerConfig,
    pretrained: bool,
    corpus: Iterable[str] | None = None,
    tokenizer_file: Path | None = None,
) -> TextTower:
    """Build the text tower. ``corpus``/``tokenizer_file`` only matter for ``scratch`` (its tokenizer)."""
    if cfg.kind == "scratch":
        from training.towers.scratch_text import build_scratch_text

        return build_scratch_text(cfg, pretrained, corpus, tokenizer_file)
    if cfg.kind == "hf":
        from training.towers.hf_text import build_hf_text

        return build_hf_text(cfg, pretrained)
    raise ValueError(f"unknown model.text.kind {cfg.kind!r} (scratch or hf)")


__all__ = ["ImageTower", "TextTower", "build_image_tower", "build_text_tower", "fixed_length"]
