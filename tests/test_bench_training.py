"""The training benchmark (bench/training.py) at its tiny size: it runs and writes sane figures.

No speed thresholds: the figures of a tiny run on a shared machine mean nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import training as bench_training


def test_steady_steps_drop_warmup() -> None:
    times = [10.0, 12.0, 12.5, 13.5]
    assert bench_training.steady_steps(times, 1) == [2.0, 0.5, 1.0]
    assert bench_training.steady_steps(times, 2) == [0.5, 1.0]
    with pytest.raises(ValueError):
        bench_training.steady_steps(times, 0)


def test_tiny_benchmark_writes_results(tmp_path: Path) -> None:
    markdown = bench_training.run(tmp_path, tiny=True)

    assert markdown == tmp_path / "training.md"
    for suffix in ("md", "json", "png"):
        assert (tmp_path / f"training.{suffix}").stat().st_size > 0
    text = markdown.read_text()
    assert "3x target is" in text and "feature cache" in text and "open_clip" in text

    result = json.loads((tmp_path / "training.json").read_text())
    runs = {run["name"]: run for run in result["runs"]}
    lit = [name for name in runs if name.startswith("LiT")]
    assert len(lit) == 3
    for name in lit:
        run = runs[name]
        sizes = bench_training.TINY
        assert len(run["steps"]) == (sizes.uncached if "no feature" in name else sizes.cached)[1]
        assert run["steps_per_s"] > 0 and run["s_per_step"] > 0 and run["wall_s"] > 0
        assert all(step > 0 for step in run["steps"])
    assert result["cache_build_s"] >= 0 and result["speedup"] > 0
    assert result["breakeven_steps"] >= 0
    openclip = runs[bench_training.OPENCLIP_RUN]
    if openclip["steps"]:  # only where bench/.cache/openclip-venv exists (--setup-openclip)
        assert len(openclip["steps"]) == bench_training.TINY.openclip[1] and openclip["steps_per_s"] > 0
    else:
        assert openclip["note"].startswith("not run")
