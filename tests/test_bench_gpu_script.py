"""The GPU benchmark script's wiring, run on the CPU providers at a tiny size (no GPU here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_script_runs_every_configuration_on_the_cpu(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bench.gpu", "--tiny", "--allow-cpu", "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    index = (tmp_path / "README.md").read_text()
    from bench.gpu import RUNS

    for folder, _, _ in RUNS:
        assert f"| {folder} |" in index
        assert (tmp_path / folder).is_dir() and list((tmp_path / folder).glob("*.json")), index
    assert "failed" not in index and "not run" not in index, index


def test_gpu_script_refuses_to_run_without_a_gpu_unless_asked(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode != 0 and "no CUDA provider" in done.stderr
