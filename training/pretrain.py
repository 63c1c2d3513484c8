"""Supervised pretraining of an image tower (the built-in CNN or a timm model) on synthetic factor labels.

It stands in for ImageNet pretraining in the demo: the tower learns to see from images that are disjoint
from the text-tuning data (their own ``pretrain`` stream), then LiT locks it. Its labels are the factors a
scene is drawn with, never a caption or a class name: shape and colour and, in world version 2, fill, size
bucket, background kind and distractor count (a label space of its own, which zero-shot prompts never use).
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

from lit_bundle import PreprocessSpec
from lit_bundle.atomic import replacing
from training.config import PretrainConfig
from training.data import scenes, vocabulary
from training.data.prerender import normalise, render_uint8
from training.data.synthetic import SyntheticWorld
from training.linear_probe import ProbeResult, linear_probe
from training.towers import build_image_tower
from training.towers.timm_tower import TimmTower
from training.train import cosine_lr, seed_everything

# The factors beside shape and colour weigh less: they shape the features, shape and colour are the point.
SIDE_FACTOR_WEIGHT = 0.3
SMOOTHING = 0.1  # label smoothing
HELD_IMAGES = 1024


@dataclass
class PretrainResult:
    weights: Path
    shape_accuracy: float
    colour_accuracy: float
    probe: ProbeResult


def factor_classes(world: SyntheticWorld) -> dict[str, int]:
    """Factor name -> number of values, for every factor the world labels its samples with."""
    classes = {"shape": len(world.shapes), "colour": len(world.colours)}
    if world.version == 2:
        classes |= {
            "fill": len(vocabulary.FILLS),
            "size": len(vocabulary.SIZE_BUCKETS),
            "background": len(vocabulary.BACKGROUNDS),
            "distractors": scenes.DISTRACTOR_COUNTS,
        }
    return classes


class FactorClassifier(nn.Module):
    """The tower with one linear head per factor."""

    def __init__(self, tower: nn.Module, dim: int, classes: dict[str, int]) -> None:
        super().__init__()
        self.tower = tower
        self.heads = nn.ModuleDict({name: nn.Linear(dim, n) for name, n in classes.items()})

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.tower(pixels)
        return {name: head(features) for name, head in self.heads.items()}


def turn_and_mirror(pixels: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A random quarter turn, mirrored half of the time: free new samples of a world whose shapes come
    at any angle (version 2), where neither changes any label."""
    pixels = torch.rot90(pixels, int(rng.integers(4)), dims=(2, 3))
    return pixels.flip(3) if rng.random() < 0.5 else pixels


def _batch(pixels: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    return normalise(pixels, spec).contiguous(memory_format=torch.channels_last)


def _held_accuracy(
    model: FactorClassifier, pixels: torch.Tensor, labels: dict[str, torch.Tensor], spec: PreprocessSpec
) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        outputs = [model(_batch(chunk, spec)) for chunk in pixels.split(512)]
    accuracy = []
    for name in ("shape", "colour"):
        predicted = torch.cat([o[name] for o in outputs]).argmax(-1)
        accuracy.append((predicted == labels[name]).float().mean().item())
    return accuracy[0], accuracy[1]


def pretrain_tower(cfg: PretrainConfig, progress: bool = True) -> PretrainResult:
    """Train the tower plus a linear head per factor, save the tower's weights, and probe them
    (:mod:`training.linear_probe`: what a locked tower offers zero-shot, in the world and out of it)."""
    if cfg.image.kind not in ("builtin", "timm"):
        raise ValueError("pretrain-tower trains the built-in tower or a timm model (image.kind=builtin|timm)")
    seed_everything(cfg.seed)
    tower = build_image_tower(cfg.image, pretrained=False)
    world = SyntheticWorld(image_size=cfg.data.image_size, seed=cfg.data.seed, version=cfg.data.version)
    classes = factor_classes(world)
    model = FactorClassifier(tower, tower.output_dim, classes).to(memory_format=torch.channels_last)
    spec = tower.preprocess
    pixels = render_uint8(
        world, "pretrain", cfg.train_size, spec, cfg.workers, progress, "rendering pretraining images"
    )
    factors = world.factors("pretrain", np.arange(cfg.train_size))
    labels = {name: torch.from_numpy(factors[name].astype(np.int64)) for name in classes}
    weights = {name: 1.0 if name in ("shape", "colour") else SIDE_FACTOR_WEIGHT for name in classes}

    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    model.train()
    for step in tqdm(range(cfg.steps), desc="pretraining tower", disable=not progress):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, cfg.lr, max(1, cfg.steps // 10), cfg.steps)
        index = torch.from_numpy(rng.integers(0, len(pixels), cfg.batch_size))
        batch = pixels[index]
        if world.version == 2:
            batch = turn_and_mirror(batch, rng)
        outputs = model(_batch(batch, spec))
        loss = sum(
            weights[name] * F.cross_entropy(outputs[name], labels[name][index], label_smoothing=SMOOTHING)
            for name in classes
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        optimizer.step()

    held = render_uint8(world, "eval", HELD_IMAGES, spec, cfg.workers)
    held_factors = world.factors("eval", np.arange(HELD_IMAGES))
    held_labels = {name: torch.from_numpy(held_factors[name]) for name in ("shape", "colour")}
    shape_acc, colour_acc = _held_accuracy(model, held, held_labels, spec)
    out = Path(cfg.out)
    # A timm tower's weights are saved as timm's model holds them, the form a timm tower loads.
    state = tower.model.state_dict() if isinstance(tower, TimmTower) else tower.state_dict()
    with replacing(out) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    # As many probe images as pretraining saw, at most 6,144 (a tiny test run probes on a few hundred).
    probe = linear_probe(tower, world, images=max(3 * world.num_classes, min(6144, cfg.train_size)))
    return PretrainResult(out, shape_acc, colour_acc, probe)
