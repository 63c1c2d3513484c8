"""The GPU benchmark script's wiring, run on the CPU providers at a tiny size (no GPU here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_kit_smoke_run_on_the_cpu(tmp_path: Path) -> None:
    """scripts/gpu_check.sh --allow-cpu: the kit's checks and benchmarks on the CPU providers, tiny."""
    env = {**os.environ, "PYTHON": sys.executable}
    command = ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--allow-cpu", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200, env=env)
    checks = (tmp_path / "checks.md").read_text() if (tmp_path / "checks.md").exists() else ""
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + checks
    from bench.gpu_checks import CHECKS

    for check in CHECKS:
        assert f"| {check.__name__.removeprefix('check_')} | pass |" in checks, checks
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


def test_wheels_travel_in_parts_and_come_back_whole(tmp_path: Path) -> None:
    import hashlib
    import random

    wheel = tmp_path / "big-1.0-py3-none-any.whl"
    data = random.Random(0).randbytes(5 * 2**20 + 123)
    wheel.write_bytes(data)
    (tmp_path / "small.whl").write_bytes(b"x")
    script = ROOT / "scripts" / "wheel_parts.py"
    subprocess.run([sys.executable, script, "split", tmp_path, "--mib", "2"], check=True)
    parts = sorted(tmp_path.glob("big-1.0-py3-none-any.whl.part-*"))
    assert len(parts) == 3 and not wheel.exists() and (tmp_path / "small.whl").exists()
    assert all(p.stat().st_size <= 2 * 2**20 for p in parts)
    parts[1].unlink()  # a part that did not arrive
    missing = subprocess.run([sys.executable, script, "join", tmp_path], capture_output=True, text=True)
    assert missing.returncode != 0 and "some did not arrive" in missing.stderr
    parts[1].write_bytes(data[2 * 2**20 : 4 * 2**20])
    subprocess.run([sys.executable, script, "join", tmp_path], check=True)
    assert hashlib.sha256(wheel.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert not list(tmp_path.glob("*.part-*"))
