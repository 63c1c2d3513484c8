"""Image towers from timm: any ``timm.create_model`` name, hub weights or a local weights file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from lit_bundle import PreprocessSpec
from training.config import ImageTowerConfig
from training.towers.base import ImageTower

_INTERPOLATIONS = {"nearest", "bilinear", "bicubic", "lanczos"}


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors or torch (.pt/.pth/.bin) state dict, unwrapping common checkpoint wrappers."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image tower weights {path} do not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_timm_weights(model: nn.Module, path: Path) -> None:
    """Strict load, except that a classifier the headless model lacks is dropped (hub files carry one)."""
    state = read_state_dict(path)
    own = model.state_dict()
    classifiers = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    if isinstance(classifiers, str):
        classifiers = (classifiers,)
    state = {
        k: v
        for k, v in state.items()
        if k in own or not any(k.startswith(f"{name}.") for name in classifiers)
    }
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"weights in {path} do not match timm model {type(model).__name__}: {exc}") from exc


def timm_preprocess(model: nn.Module, kwargs: dict[str, Any]) -> PreprocessSpec:
    """Preprocessing from timm's data config; ``img_size`` in kwargs wins over the pretrained default."""
    from timm.data import resolve_data_config

    args: dict[str, Any] = {}
    img_size = kwargs.get("img_size")
    if img_size is not None:
        height, width = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        args["input_size"] = (3, height, width)
    data = resolve_data_config(args, model=model)
    _, height, width = data["input_size"]
    if height != width:
        raise ValueError(f"timm model input size {height}x{width} is not square; set img_size in kwargs")
    interpolation = data.get("interpolation", "bicubic")
    return PreprocessSpec(
        size=int(height),
        resize="squash" if data.get("crop_mode") == "squash" else "shortest",
        crop_fraction=min(float(data.get("crop_pct") or 1.0), 1.0),
        interpolation=interpolation if interpolation in _INTERPOLATIONS else "bicubic",
        mean=tuple(float(m) for m in data["mean"]),
        std=tuple(float(s) for s in data["std"]),
    )


class TimmTower(ImageTower):
    """A headless timm model (``num_classes=0``): its forward already returns pooled features."""

    def __init__(self, model: nn.Module, preprocess: PreprocessSpec) -> None:
        super().__init__()
        self.model = model
        # head_hidden_size: what a headless forward returns (differs from num_features for e.g. MobileNetV3).
        self.output_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
        self.preprocess = preprocess

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels)


def build_timm(cfg: ImageTowerConfig, pretrained: bool) -> TimmTower:
    import timm

    from_hub = pretrained and cfg.weights is None
    model = timm.create_model(cfg.name, pretrained=from_hub, num_classes=0, **cfg.kwargs)
    if pretrained and cfg.weights is not None:
        load_timm_weights(model, cfg.weights)
    return TimmTower(model, timm_preprocess(model, cfg.kwargs))
