"""Image towers from Hugging Face transformers vision models (ViT, DeiT, ConvNeXt, CLIP/SigLIP vision, ...).

Features are ``pooler_output`` when the model has a pooler whose weights were actually loaded (CLIP's
post-layernorm CLS, SigLIP's attention-pool head, ResNet/ConvNeXt's global pool, ViT's pooler), else the
mean of ``last_hidden_state`` over tokens (or over H, W for conv maps). A pooler that the checkpoint lacks
would be random, so it is skipped: a random projection would only lose information a locked tower has.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lit_bundle import PreprocessSpec
from training.config import ImageTowerConfig
from training.towers.base import ImageTower

# PIL resampling codes as used by transformers' image processors.
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bilinear"}


def _field(obj: Any, key: str) -> Any:
    """Read ``key`` from a plain dict or a transformers ``SizeDict``."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


def _square(size: Any, what: str) -> int | None:
    if isinstance(size, int):
        return size
    height, width = _field(size, "height"), _field(size, "width")
    if height is None:
        return None
    if height != width:
        raise ValueError(
            f"image processor {what} {height}x{width} is not square; only square inputs are supported"
        )
    return int(height)


def processor_preprocess(processor: Any) -> PreprocessSpec:
    """Translate an ``AutoImageProcessor`` into a :class:`PreprocessSpec`.

    ``{"height", "width"}`` resizes both sides (squash, like ViT's processor); ``{"shortest_edge"}``
    resizes the short side and centre-crops to ``crop_size`` (CLIP), or to a square of the short side
    when the processor does not crop.
    """
    size, crop = processor.size, getattr(processor, "crop_size", None)
    do_crop = bool(getattr(processor, "do_center_crop", False)) and crop is not None
    if getattr(processor, "do_normalize", True):
        mean = tuple(float(m) for m in processor.image_mean)
        std = tuple(float(s) for s in processor.image_std)
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    resample = getattr(processor, "resample", 3)
    interpolation = _RESAMPLE.get(int(resample), "bicubic") if resample is not None else "bicubic"
    square = _square(size, "size")
    if square is not None and not do_crop:
        return PreprocessSpec(size=square, resize="squash", interpolation=interpolation, mean=mean, std=std)
    shortest = _field(size, "shortest_edge") or square
    if shortest is None:
        raise ValueError(
            f"image processor size {size!r} is not supported (need height/width or shortest_edge)"
        )
    crop_pct = getattr(processor, "crop_pct", None)
    if do_crop:
        out = _square(crop, "crop_size") or int(shortest)
        fraction = out / shortest
    elif crop_pct is not None and shortest < 384:
        out, fraction = int(shortest), float(crop_pct)  # ConvNeXt: resize to size/crop_pct, crop to size
    else:
        out, fraction = int(shortest), 1.0
    return PreprocessSpec(
        size=out,
        resize="shortest",
        crop_fraction=min(fraction, 1.0),
        interpolation=interpolation,
        mean=mean,
        std=std,
    )


def _config_preprocess(config: Any) -> PreprocessSpec:
    config = getattr(config, "vision_config", None) or config
    size = getattr(config, "image_size", 224)
    size = size if isinstance(size, int) else int(size[0])
    return PreprocessSpec(size=size, resize="squash", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def _load_preprocess(name: str, config: Any) -> PreprocessSpec:
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(name)
    except (OSError, ValueError):
        return _config_preprocess(config)
    return processor_preprocess(processor)


class HFVisionTower(ImageTower):
    def __init__(self, model: nn.Module, preprocess: PreprocessSpec, use_pooler: bool = True) -> None:
        super().__init__()
        self.model = model
        self.use_pooler = use_pooler
        self.preprocess = preprocess
        self.output_dim = self._probe_dim()

    def _probe_dim(self) -> int:
        """One tiny forward: configs name the width differently (hidden_size, hidden_sizes[-1], ...)."""
        was_training = self.training
        self.eval()
        size = self.preprocess.size
        param = next(self.model.parameters())
        with torch.no_grad():
            dim = self(torch.zeros(1, 3, size, size, dtype=param.dtype, device=param.device)).shape[-1]
        self.train(was_training)
        return int(dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixels)
        pooled = getattr(out, "pooler_output", None) if self.use_pooler else None
        if pooled is not None:
            return pooled.flatten(1)
        hidden = out.last_hidden_state
        return hidden.mean(dim=(2, 3)) if hidden.dim() == 4 else hidden.mean(dim=1)


def _vision_part(model: nn.Module) -> nn.Module:
    """CLIP/SigLIP-style dual models: keep only the vision encoder."""
    vision = getattr(model, "vision_model", None)
    return vision if isinstance(vision, nn.Module) else model


def build_hf_vision(cfg: ImageTowerConfig, pretrained: bool) -> HFVisionTower:
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(cfg.name)
    use_pooler = True
    if pretrained:
        model, info = AutoModel.from_pretrained(cfg.name, dtype=torch.float32, output_loading_info=True)
        use_pooler = not any(".pooler." in f".{key}" for key in info["missing_keys"])
    else:
        model = AutoModel.from_config(config)
    return HFVisionTower(_vision_part(model), _load_preprocess(cfg.name, config), use_pooler)
