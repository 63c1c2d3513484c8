"""Checkpoints written atomically: a reader sees a complete checkpoint or none.

Layout: ``<out_dir>/step-0000100/`` holding ``model.safetensors`` (weights), ``train_state.pt``
(optimiser state, step, RNG states, history), ``tokenizer.json`` and ``config.json``; ``<out_dir>/latest``
names the newest one. A checkpoint is filled in a hidden staging folder, flushed to disk and renamed into
place, and only then does ``latest`` move to it, so a run killed at any instant leaves every visible
``step-*`` folder complete and ``latest`` naming one of them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from lit_bundle import atomic

LATEST = "latest"
REQUIRED = ("model.safetensors", "train_state.pt", "config.json")
_STEP_DIR = re.compile(r"step-(\d+)")


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
    target = out_dir / f"step-{step:07d}"
    with atomic.staging_dir(out_dir, target.name) as staging:
        save_model(model, str(staging / "model.safetensors"))
        torch.save(train_state, staging / "train_state.pt")
        (staging / "config.json").write_text(config_json)
        if tokenizer_writer is not None:
            tokenizer_writer(staging)
        atomic.commit_dir(staging, target, replace=True)  # re-saving a step replaces it whole
    atomic.write_atomic(out_dir / LATEST, target.name + "\n")
    return target


def is_complete(checkpoint: Path) -> bool:
    return all((Path(checkpoint) / name).is_file() for name in REQUIRED)


def checkpoints(out_dir: Path) -> list[Path]:
    """The run's visible checkpoints, oldest first (staging folders are hidden and never listed)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out_dir.iterdir() if (m := _STEP_DIR.fullmatch(p.name))]
    return [path for _, path in sorted(found)]


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The checkpoint ``latest`` names; the newest complete one if that is missing (a kill mid-replace)."""
    pointer = Path(out_dir) / LATEST
    if pointer.is_file():
        path = Path(out_dir) / pointer.read_text().strip()
        if is_complete(path):
            return path
    complete = [path for path in checkpoints(out_dir) if is_complete(path)]
    return complete[-1] if complete else None


def load_weights(model: nn.Module, checkpoint: Path) -> None:
    missing, unexpected = load_model(model, str(Path(checkpoint) / "model.safetensors"), strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {checkpoint} does not match the model (missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}): was it trained with a different model config?"
        )


def load_train_state(checkpoint: Path) -> dict[str, Any]:
    return torch.load(Path(checkpoint) / "train_state.pt", weights_only=False)
