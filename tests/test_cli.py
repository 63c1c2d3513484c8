"""The ``lit-train`` commands end to end on tiny settings: demo recipe, evaluate, ablation, bad configs."""

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from training.cli import app
from training.recipes import run_ablation

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


def test_ablation_writes_a_table(tmp_path: Path) -> None:
    summaries = run_ablation(
        tmp_path, modes=("Lu", "uu"), overrides=[*TINY, f"cache_dir={tmp_path / 'c'}"], progress=False
    )
    assert [s.mode for s in summaries] == ["Lu", "uu"]
    assert [s.cache_used for s in summaries] == [True, False]
    table = (tmp_path / "ablation.md").read_text()
    assert "| Lu |" in table and "| uu |" in table


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
