"""Exact resume: a run stopped and resumed gives the same next-step losses as an uninterrupted run."""

from pathlib import Path

import pytest

from tests.helpers import tiny_config
from training.checkpoint import latest_checkpoint
from training.train import train


@pytest.mark.parametrize("cached", [True, False])
def test_resume_is_exact(tmp_path: Path, tower_weights: Path, cached: bool) -> None:
    common = ("steps=6", "model.text.dropout=0.2", f"feature_cache={str(cached).lower()}")
    whole = train(tiny_config(tmp_path / "a", tower_weights, *common), progress=False)
    cfg = tiny_config(tmp_path / "b", tower_weights, *common)
    first = train(cfg, progress=False, stop_at=3)
    assert [h["step"] for h in first.history] == [1, 2, 3]
    assert latest_checkpoint(cfg.out_dir).name == "step-0000003"
    resumed = train(cfg, resume=True, progress=False)
    assert [h["step"] for h in resumed.history] == [1, 2, 3, 4, 5, 6]
    for expected, got in zip(whole.history, resumed.history, strict=True):
        assert got["loss"] == pytest.approx(expected["loss"], abs=1e-6), got["step"]
    assert whole.history[3]["loss"] != whole.history[4]["loss"]  # the comparison can fail


def test_checkpoints_are_complete_or_absent(tmp_path: Path, tower_weights: Path) -> None:
    cfg = tiny_config(tmp_path, tower_weights, "steps=4", "checkpoint_every=2")
    train(cfg, progress=False)
    names = sorted(p.name for p in Path(cfg.out_dir).iterdir())
    assert "step-0000002" in names and "step-0000004" in names
    assert not [n for n in names if n.startswith(".tmp")]
    for step in ("step-0000002", "step-0000004"):
        files = {p.name for p in (Path(cfg.out_dir) / step).iterdir()}
        assert {"model.safetensors", "train_state.pt", "tokenizer.json", "config.json"} <= files
    assert latest_checkpoint(cfg.out_dir).name == "step-0000004"
