"""The ``lit-train`` commands end to end on tiny settings: demo recipe, evaluate, ablation, bad configs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from training.ablation import run_ablation
from training.cli import app

TINY = [
    "pretrain.steps=3",
    "pretrain.batch_size=16",
    "pretrain.train_size=64",
    "pretrain.image.image_size=32",
    "pretrain.image.width=8",
    "pretrain.data.image_size=32",
    "steps=3",
    "batch_size=16",
    "checkpoint_every=0",
    "model.image.image_size=32",
    "model.image.width=8",
    "model.text.width=32",
    "model.text.layers=1",
    "model.text.heads=2",
    "model.text.vocab_size=200",
    "data.synthetic.image_size=32",
    "data.synthetic.train_size=64",
    "data.synthetic.eval_size=128",
    "data.synthetic.eval_seeds=1",
]


def test_demo_builds_evaluates_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    runner = CliRunner()
    result = runner.invoke(app, ["demo", "--out", str(out), "--quiet", *TINY, f"cache_dir={tmp_path / 'c'}"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    for key in ("heldout_top1", "seen_top1", "top1", "top5", "i2t_r1", "t2i_r10", "build_seconds"):
        assert key in summary
    assert 0.0 <= summary["heldout_top1"] <= 1.0
    report = out / "lit" / "report"
    assert {"report.json", "report.md", "loss.png", "confusion.png"} <= {p.name for p in report.iterdir()}

    evaluated = runner.invoke(
        app, ["evaluate", str(out / "lit"), "--quiet", "--size", "64", "--out", str(tmp_path / "ev")]
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads((tmp_path / "ev" / "report.json").read_text())["metrics"]["eval_images"] == 64


def test_ablation_writes_a_table_with_the_spread_over_seeds(tmp_path: Path) -> None:
    results = run_ablation(
        tmp_path, rows=("Lu", "uu"), seeds=2, overrides=[*TINY, f"cache_dir={tmp_path / 'c'}"], progress=False
    )
    assert list(results) == ["Lu", "uu"] and [len(runs) for runs in results.values()] == [2, 2]
    assert [runs[0].cache_used for runs in results.values()] == [True, False]
    rows = json.loads((tmp_path / "ablation.json").read_text())
    for row in rows:
        held = [run["heldout_top1"] for run in row["runs"]]
        assert row["heldout_top1"] == pytest.approx(sum(held) / 2)
        assert row["heldout_top1_std"] == pytest.approx(abs(held[0] - held[1]) / 2**0.5)
        assert [run["seed"] for run in row["runs"]] == [0, 1]
    table = (tmp_path / "ablation.md").read_text()
    assert "| Lu |" in table and "| uu |" in table and "over 2 seed(s)" in table
    assert (tmp_path / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "Lu-seed1").is_dir()


def test_rows_run_in_separate_invocations_share_the_tower_and_the_table(tmp_path: Path) -> None:
    overrides = [*TINY, f"cache_dir={tmp_path / 'c'}"]
    run_ablation(tmp_path, rows=("Lu",), seeds=1, overrides=overrides, progress=False)
    tower = (tmp_path / "tower.safetensors").stat().st_mtime_ns
    run_ablation(tmp_path, rows=("uu",), seeds=1, overrides=overrides, progress=False)
    assert (tmp_path / "tower.safetensors").stat().st_mtime_ns == tower  # not pretrained again
    assert [row["row"] for row in json.loads((tmp_path / "ablation.json").read_text())] == ["Lu", "uu"]
    # another pretraining config: a new tower, and the earlier rows (on the old one) leave the table
    run_ablation(tmp_path, rows=("uu",), seeds=1, overrides=[*overrides, "pretrain.steps=4"], progress=False)
    assert (tmp_path / "tower.safetensors").stat().st_mtime_ns != tower
    assert [row["row"] for row in json.loads((tmp_path / "ablation.json").read_text())] == ["uu"]


def test_an_unknown_ablation_row_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rows must be among"):
        run_ablation(tmp_path, rows=("Lx",), overrides=TINY, progress=False)
    assert not any(tmp_path.iterdir())


def test_bad_config_fails_fast_naming_the_key(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "training", "train", "model.mod=LU", f"out_dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "model.mod" in done.stdout and "unknown key" in done.stdout
    assert not any(tmp_path.iterdir())


def test_help_lists_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    for command in ("pretrain-tower", "train", "evaluate", "demo", "ablation"):
        assert command in result.output
