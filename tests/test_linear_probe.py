"""The linear probe that says whether an image tower is worth locking (training/linear_probe.py)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from training.config import ImageTowerConfig
from training.data.synthetic import SyntheticWorld
from training.linear_probe import fit_probe, linear_probe
from training.towers import build_image_tower


def test_the_probe_separates_what_is_linearly_separable() -> None:
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 16, generator=generator) * 4
    labels = torch.arange(500) % 5
    features = centres[labels] + torch.randn(500, 16, generator=generator) * 0.5
    probe = fit_probe(features[:400], labels[:400], 5)
    assert (probe(features[400:]).argmax(-1) == labels[400:]).float().mean() == 1.0


def test_the_probe_cannot_separate_noise() -> None:
    generator = torch.Generator().manual_seed(1)
    features, labels = (
        torch.randn(600, 8, generator=generator),
        torch.randint(0, 6, (600,), generator=generator),
    )
    probe = fit_probe(features[:400], labels[:400], 6)
    assert (probe(features[400:]).argmax(-1) == labels[400:]).float().mean() < 0.35  # chance is 1/6


def test_a_tower_is_probed_in_the_world_and_on_the_second_renderer() -> None:
    tower = build_image_tower(ImageTowerConfig(kind="builtin", image_size=32, width=8), pretrained=False)
    result = linear_probe(tower, SyntheticWorld(image_size=32, seed=0), images=192)
    assert 0.0 <= result.top1 <= 1.0 and 0.0 <= result.ood_top1 <= 1.0
    assert set(result.metrics()) == {"tower_probe_top1", "tower_probe_ood_top1"}


def test_the_probe_s_images_come_from_the_world_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fresh images of the same world (its version too), only another seed."""
    import training.linear_probe as probe_module

    seen = []
    real = probe_module.SyntheticPairs

    def spy(world: SyntheticWorld, *args: Any, **kwargs: Any) -> Any:
        seen.append(world)
        return real(world, *args, **kwargs)

    monkeypatch.setattr(probe_module, "SyntheticPairs", spy)
    tower = build_image_tower(ImageTowerConfig(kind="builtin", image_size=32, width=8), pretrained=False)
    world = SyntheticWorld(image_size=32, seed=3, version=2)
    linear_probe(tower, world, images=3 * world.num_classes)
    assert seen and seen[0].version == 2 and seen[0].image_size == 32 and seen[0].seed != world.seed
