"""Checkpoints written atomically: a reader sees a complete checkpoint or none.

Layout: ``<out_dir>/step-0000100/`` holding ``model.safetensors`` (weights), ``train_state.pt``
(optimiser state, step, RNG states), ``tokenizer.json`` and ``config.json``; ``<out_dir>/latest`` names
the newest complete one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from lit_bundle.manifest import write_text_atomic

LATEST = "latest"


def save_checkpoint(
    out_dir: Path,
    step: int,
    model: nn.Module,
    train_state: dict[str, Any],
    config_json: str,
    tokenizer_writer: Any = None,
) -> Path:
    """Write checkpoint ``step`` and point ``latest`` at it; returns its folder."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"step-{step:07d}"
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=out_dir))
    try:
        save_model(model, str(staging / "model.safetensors"))
        torch.save(train_state, staging / "train_state.pt")
        (staging / "config.json").write_text(config_json)
        if tokenizer_writer is not None:
            tokenizer_writer(staging)
        if target.exists():  # re-saving the same step: move the old one aside first
            shutil.rmtree(target)
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_text_atomic(out_dir / LATEST, target.name + "\n")
    return target


def latest_checkpoint(out_dir: Path) -> Path | None:
    pointer = Path(out_dir) / LATEST
    if not pointer.is_file():
        return None
    path = Path(out_dir) / pointer.read_text().strip()
    return path if (path / "model.safetensors").is_file() else None


def load_weights(model: nn.Module, checkpoint: Path) -> None:
    missing, unexpected = load_model(model, str(Path(checkpoint) / "model.safetensors"), strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {checkpoint} does not match the model (missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}): was it trained with a different model config?"
        )


def load_train_state(checkpoint: Path) -> dict[str, Any]:
    return torch.load(Path(checkpoint) / "train_state.pt", weights_only=False)
