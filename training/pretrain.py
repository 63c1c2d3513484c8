"""Supervised pretraining of an image tower (the built-in CNN or a timm model) on synthetic factor labels.

It stands in for ImageNet pretraining in the demo: the tower learns to see shape and colour from images
that are disjoint from the text-tuning data (their own ``pretrain`` stream), then LiT locks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from lit_bundle.atomic import replacing
from training.config import PretrainConfig
from training.data.pairs import pixel_transform
from training.data.synthetic import SyntheticPairs, SyntheticWorld
from training.linear_probe import ProbeResult, linear_probe
from training.towers import build_image_tower
from training.towers.timm_tower import TimmTower
from training.train import cosine_lr, seed_everything


@dataclass
class PretrainResult:
    weights: Path
    shape_accuracy: float
    colour_accuracy: float
    probe: ProbeResult


def render_tensors(dataset: SyntheticPairs, progress: bool, desc: str) -> torch.Tensor:
    """Render a synthetic split once into one tensor (cheaper than re-rendering every epoch)."""
    items = [dataset[i][0] for i in tqdm(range(len(dataset)), desc=desc, disable=not progress)]
    return torch.stack(items)


class FactorClassifier(nn.Module):
    def __init__(self, tower: nn.Module, dim: int, shapes: int, colours: int) -> None:
        super().__init__()
        self.tower = tower
        self.shape_head = nn.Linear(dim, shapes)
        self.colour_head = nn.Linear(dim, colours)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.tower(pixels)
        return self.shape_head(features), self.colour_head(features)


def _accuracy(model: FactorClassifier, pixels: torch.Tensor, shapes: torch.Tensor, colours: torch.Tensor):
    model.eval()
    with torch.no_grad():
        outputs = [model(chunk) for chunk in pixels.split(512)]
    shape_pred = torch.cat([o[0] for o in outputs]).argmax(-1)
    colour_pred = torch.cat([o[1] for o in outputs]).argmax(-1)
    return (shape_pred == shapes).float().mean().item(), (colour_pred == colours).float().mean().item()


def pretrain_tower(cfg: PretrainConfig, progress: bool = True) -> PretrainResult:
    """Train the tower plus two linear heads (shape, colour), save the tower's weights, and probe them
    (:mod:`training.linear_probe`: what a locked tower offers zero-shot, in the world and out of it)."""
    if cfg.image.kind not in ("builtin", "timm"):
        raise ValueError("pretrain-tower trains the built-in tower or a timm model (image.kind=builtin|timm)")
    seed_everything(cfg.seed)
    tower = build_image_tower(cfg.image, pretrained=False)
    world = SyntheticWorld(image_size=cfg.data.image_size, seed=cfg.data.seed, version=cfg.data.version)
    model = FactorClassifier(tower, tower.output_dim, len(world.shapes), len(world.colours))
    transform = pixel_transform(tower.preprocess)
    train_set = SyntheticPairs(world, "pretrain", cfg.train_size, transform)
    held_set = SyntheticPairs(world, "eval", 1024, transform)
    pixels = render_tensors(train_set, progress, "rendering pretraining images")
    shapes, colours = torch.from_numpy(train_set.shape_labels), torch.from_numpy(train_set.colour_labels)

    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    model.train()
    for step in tqdm(range(cfg.steps), desc="pretraining tower", disable=not progress):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, cfg.lr, max(1, cfg.steps // 20), cfg.steps)
        index = torch.from_numpy(rng.integers(0, len(pixels), cfg.batch_size))
        shape_logits, colour_logits = model(pixels[index])
        loss = F.cross_entropy(shape_logits, shapes[index]) + F.cross_entropy(colour_logits, colours[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    held_pixels = render_tensors(held_set, False, "")
    shape_acc, colour_acc = _accuracy(
        model, held_pixels, torch.from_numpy(held_set.shape_labels), torch.from_numpy(held_set.colour_labels)
    )
    out = Path(cfg.out)
    # A timm tower's weights are saved as timm's model holds them, the form a timm tower loads.
    weights = tower.model.state_dict() if isinstance(tower, TimmTower) else tower.state_dict()
    with replacing(out) as tmp:
        save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp))
    # As many probe images as pretraining saw, at most 6,144 (a tiny test run probes on a few hundred).
    probe = linear_probe(tower, world, images=max(3 * world.num_classes, min(6144, cfg.train_size)))
    return PretrainResult(out, shape_acc, colour_acc, probe)
