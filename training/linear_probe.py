"""A linear probe of an image tower: is it worth locking?

LiT locks the image tower, so zero-shot transfer can be no better than what its features already separate.
The probe measures that before any text is involved: a linear classifier over the frozen features, trained
on rendered images of the world's (shape, colour) classes and scored on other images of the same classes
(``top1``), and on the second renderer's out-of-distribution images (``ood_top1``, the same classes drawn by
other code on light and dark backgrounds). A tower whose ``ood_top1`` is low has learned the renderer, and
no text tower tuned on it will transfer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.data.pairs import pixel_transform
from training.data.second_renderer import class_names as ood_class_names
from training.data.second_renderer import render_set
from training.data.synthetic import SyntheticPairs, SyntheticWorld
from training.towers.base import ImageTower

CHUNK = 256
# A world seed no training split uses: the probe's images are fresh.
PROBE_SEED_OFFSET = 7919


@dataclass(frozen=True)
class ProbeResult:
    top1: float
    ood_top1: float

    def metrics(self, prefix: str = "tower_probe_") -> dict[str, float]:
        return {f"{prefix}top1": round(self.top1, 4), f"{prefix}ood_top1": round(self.ood_top1, 4)}


def tower_features(tower: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    tower.eval()
    with torch.no_grad():
        return torch.cat([tower(chunk).float() for chunk in pixels.split(CHUNK)])


def fit_probe(features: torch.Tensor, labels: torch.Tensor, classes: int, steps: int = 300) -> nn.Module:
    """Multinomial logistic regression on standardised features (full batch, L-BFGS, a little L2)."""
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    linear = nn.Linear(features.shape[1], classes)
    x = (features - mean) / std
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(x), labels) + 1e-3 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return nn.Sequential(_Standardise(mean, std), linear).eval()


class _Standardise(nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _accuracy(probe: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((probe(features).argmax(-1) == labels).float().mean())


def linear_probe(tower: ImageTower, world: SyntheticWorld, images: int = 6144) -> ProbeResult:
    """Fit on two thirds of ``images`` fresh images of the world's classes, score on the rest, and on
    second-renderer images of each class it draws (one per 768 ``images``, at least one; among those
    classes, as its zero-shot figure is) at the tower's input size."""
    train_size = 2 * images // 3
    test_size = images - train_size
    ood_per_class = max(1, images // 768)
    transform = pixel_transform(tower.preprocess)
    fresh = replace(world, seed=world.seed + PROBE_SEED_OFFSET)  # the same world (version, size), new images
    data = SyntheticPairs(fresh, "eval", train_size + test_size, transform)
    pixels = torch.stack([torch.as_tensor(data[i][0]) for i in range(len(data))])
    labels = torch.from_numpy(data.labels)
    features = tower_features(tower, pixels)
    probe = fit_probe(features[:train_size], labels[:train_size], world.num_classes)
    top1 = _accuracy(probe, features[train_size:], labels[train_size:])
    index = {name: i for i, name in enumerate(world.class_names)}
    names = ood_class_names()
    missing = [n for n in names if n not in index]
    if missing:
        raise ValueError(f"the second renderer draws classes the world lacks: {missing[:4]}")
    drawn = list(render_set(per_class=ood_per_class, seed=0, size=max(64, world.image_size)))
    ood_pixels = torch.stack([transform(d.image) for d in drawn])
    ood_labels = torch.as_tensor(np.array([index[d.label] for d in drawn]))
    drawable = torch.as_tensor([index[name] for name in names])  # scored among the classes it draws
    with torch.no_grad():
        logits = probe(tower_features(tower, ood_pixels))[:, drawable]
    ood_top1 = float((drawable[logits.argmax(-1)] == ood_labels).float().mean())
    return ProbeResult(top1, ood_top1)
