"""A locked image tower gets no gradients and stays in eval mode for the whole training run."""

from pathlib import Path

import pytest
import torch

from tests.helpers import tiny_config
from training.factory import build_model
from training.train import train


def test_locked_tower_has_no_grad_and_stays_in_eval(tmp_path: Path, tower_weights: Path, monkeypatch) -> None:
    cfg = tiny_config(tmp_path, tower_weights, "feature_cache=false", "steps=3")
    seen_modes: list[bool] = []
    built = {}

    import training.train as train_module

    real_build = train_module.build_model

    def spying_build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        built["model"] = model
        before = {k: v.clone() for k, v in model.image_tower.state_dict().items()}
        built["before"] = before
        model.image_tower.register_forward_pre_hook(
            lambda module, _: seen_modes.append(any(m.training for m in module.modules()))
        )
        return model

    monkeypatch.setattr(train_module, "build_model", spying_build)
    result = train(cfg, progress=False)
    model = built["model"]
    assert len(seen_modes) == 3 and not any(seen_modes), "locked tower ran in train mode"
    assert not any(p.requires_grad for p in model.image_tower.parameters())
    assert all(p.grad is None for p in model.image_tower.parameters())
    after = model.image_tower.state_dict()
    batchnorm_stats = [k for k in after if "running_mean" in k or "running_var" in k]
    assert batchnorm_stats, "the demo tower should have BatchNorm"
    for key, value in built["before"].items():
        assert torch.equal(value, after[key]), f"{key} changed although the tower is locked"
    assert any(p.requires_grad for p in model.text_tower.parameters())
    assert result.history[-1]["loss"] > 0


@pytest.mark.parametrize("mode", ["Uu", "uu"])
def test_unlocked_tower_trains(tmp_path: Path, tower_weights: Path, mode: str) -> None:
    cfg = tiny_config(tmp_path, tower_weights, f"model.mode={mode}")
    model = build_model(cfg.model, "softmax", corpus=["a red circle", "a blue square"])
    model.train()
    assert model.image_tower.training
    assert all(p.requires_grad for p in model.image_tower.parameters())


def test_lock_survives_train_calls(tmp_path: Path, tower_weights: Path) -> None:
    cfg = tiny_config(tmp_path, tower_weights)
    model = build_model(cfg.model, "softmax", corpus=["a red circle", "a blue square"])
    model.train()
    model.train(True)
    assert not any(m.training for m in model.image_tower.modules())
    assert model.text_tower.training
