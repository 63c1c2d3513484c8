"""Exact resume: a run stopped and resumed gives the same next-step losses as an uninterrupted run."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import tiny_config
from training.checkpoint import latest_checkpoint, save_checkpoint
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
    assert resumed.history == whole.history  # bit for bit: loss, learning rate and gradient norm per step
    assert resumed.resumed_from is not None and resumed.resumed_from.name == "step-0000003"
    for name in ("model.safetensors", "tokenizer.json"):
        assert (resumed.checkpoint / name).read_bytes() == (whole.checkpoint / name).read_bytes(), name
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


def test_latest_falls_back_to_the_newest_complete_checkpoint(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    for step in (1, 2):
        save_checkpoint(tmp_path, step, model, {"step": step}, "{}")
    assert latest_checkpoint(tmp_path) == tmp_path / "step-0000002"
    (tmp_path / "step-0000002").rename(tmp_path / "moved")  # a kill while step 2 was being replaced
    assert latest_checkpoint(tmp_path) == tmp_path / "step-0000001"
    (tmp_path / "latest").unlink()
    assert latest_checkpoint(tmp_path) == tmp_path / "step-0000001"


def test_a_new_run_deletes_what_killed_saves_left(tmp_path: Path, tower_weights: Path) -> None:
    cfg = tiny_config(tmp_path, tower_weights, "steps=1")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    host = socket.gethostname()
    (out / f".tmp-step-0000001~{host}~{dead.stdout.strip()}~abc").mkdir()  # a killed writer's staging folder
    (out / f".tmp-latest~{host}~{dead.stdout.strip()}~def").write_text("step-")
    (out / f".tmp-step-0000002~{host}~{os.getpid()}~ghi").mkdir()  # a live writer's: kept
    train(cfg, progress=False)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [
        f".tmp-step-0000002~{host}~{os.getpid()}~ghi"
    ]
