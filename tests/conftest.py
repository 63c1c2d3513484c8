"""Shared fixtures. Tests never reach a model hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tests.helpers import TINY_IMAGE
from training.config import ImageTowerConfig


@pytest.fixture
def tower_weights(tmp_path: Path) -> Path:
    """A randomly initialised tiny built-in tower saved as if it had been pretrained."""
    from training.towers import build_image_tower

    torch.manual_seed(0)  # deterministic tests
    tower = build_image_tower(ImageTowerConfig(**TINY_IMAGE), pretrained=False)
    path = tmp_path / "tower.safetensors"
    save_file({k: v.contiguous() for k, v in tower.state_dict().items()}, str(path))
    return path
