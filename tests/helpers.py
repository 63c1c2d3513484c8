"""Tiny training configurations: every training test runs in seconds on 2 CPU cores."""

from __future__ import annotations

from pathlib import Path

from training.config import ImageTowerConfig, TrainConfig, load_config

TINY_IMAGE = {"kind": "builtin", "image_size": 32, "width": 8}


def tiny_config(tmp_path: Path, weights: Path, *overrides: str) -> TrainConfig:
    base = [
        f"out_dir={tmp_path / 'run'}",
        f"cache_dir={tmp_path / 'cache'}",
        "steps=4",
        "batch_size=16",
        "checkpoint_every=0",
        "log_every=1",
        "optim.warmup_steps=2",
        "model.image.kind=builtin",
        "model.image.image_size=32",
        "model.image.width=8",
        f"model.image.weights={weights}",
        "model.text.width=32",
        "model.text.layers=1",
        "model.text.heads=2",
        "model.text.vocab_size=200",
        "model.text.context_length=12",
        "data.synthetic.image_size=32",
        "data.synthetic.train_size=64",
        "data.synthetic.eval_size=64",
    ]
    return load_config(TrainConfig, None, [*base, *overrides])


def tiny_checkpoint(root: Path, steps: int = 3) -> Path:
    """A tiny LiT checkpoint trained ``steps`` steps under ``root`` on a random tower (seeded)."""
    import torch
    from safetensors.torch import save_file

    from training.towers import build_image_tower
    from training.train import train

    torch.manual_seed(0)  # deterministic tests
    tower = build_image_tower(ImageTowerConfig(**TINY_IMAGE), pretrained=False)
    weights = root / "tower.safetensors"
    save_file({k: v.contiguous() for k, v in tower.state_dict().items()}, str(weights))
    return train(tiny_config(root, weights, f"steps={steps}"), progress=False).checkpoint
