"""The gateway benchmarks (gateway_throughput, label_encoding, footprint, cpu_int8) at their tiny size:
each runs against real gateway processes and writes sane figures.

No speed thresholds: the figures of a tiny run on a shared machine mean nothing.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from bench import cpu_int8, footprint, gateway_throughput, label_encoding
from harness.images import photo_jpegs


def _written(folder: Path, name: str) -> dict:
    for suffix in ("md", "json", "png"):
        assert (folder / f"{name}.{suffix}").stat().st_size > 0
    return json.loads((folder / f"{name}.json").read_text())


def test_photo_jpegs_are_distinct_jpeg_photos() -> None:
    blobs = photo_jpegs(3, (320, 240))
    assert len(set(blobs)) == 3
    for blob in blobs:
        assert blob[:2] == b"\xff\xd8"
    assert Image.open(io.BytesIO(blobs[0])).size == (320, 240)


def test_completion_rate_ignores_where_batch_bursts_fall() -> None:
    # A batch of 16 answers every 0.7 s: 18 bursts land in a 12 s window, so counting says 24/s.
    bursts = [0.05 + 0.7 * j for j in range(18)]
    finished = [t + 0.001 * i for t in bursts for i in range(16)]
    assert len(finished) / 12 == 24
    assert gateway_throughput.completion_rate(finished, 12) == pytest.approx(16 / 0.7, rel=1e-3)


def test_gateway_throughput_tiny(tmp_path: Path) -> None:
    markdown = gateway_throughput.run(tmp_path, tiny=True)

    assert markdown == tmp_path / "gateway_throughput.md"
    result = _written(tmp_path, "gateway_throughput")
    assert [r["bundle"] for r in result["results"]] == ["clip_tiny", "lit_demo"]
    for bundle in result["results"]:
        assert all(r["images_per_s"] > 0 for r in bundle["raw"])
        assert bundle["raw_limit"] > 0 and bundle["raw_best"]["images_per_s"] > 0
        assert len(bundle["raw_brackets"]) == len(bundle["levels"]) + 1
        assert [lv["concurrency"] for lv in bundle["levels"]] == list(gateway_throughput.TINY.concurrency)
        for level in bundle["levels"]:
            assert level["errors"] == 0 and level["requests"] > 0
            assert level["images_per_s"] > 0 and level["raw_images_per_s"] > 0 and level["ratio"] > 0
            assert 0 < level["p50_ms"] <= level["p95_ms"] <= level["p99_ms"]
            assert level["text_misses"] == 0  # labels were cached beforehand
            assert level["mean_batch"] >= 1 and level["gateway_cores"] > 0
    text = markdown.read_text()
    assert "0.85" in text and "HTTP-bound" in text


def test_label_encoding_tiny(tmp_path: Path) -> None:
    markdown = label_encoding.run(tmp_path, tiny=True)

    assert markdown == tmp_path / "label_encoding.md"
    result = _written(tmp_path, "label_encoding")
    assert len(result["templates"]) == 7
    for bundle in result["results"]:
        assert all(r["prompts_per_s"] > 0 for r in bundle["raw"])
        for registration in bundle["registrations"]:
            assert registration["misses"] == registration["labels"] == label_encoding.TINY.labels
            assert registration["prompts"] == 7 * registration["labels"]
            assert registration["seconds"] > 0 and registration["prompts_per_s"] > 0
        assert bundle["ratio"] > 0


def test_footprint_tiny(tmp_path: Path) -> None:
    markdown = footprint.run(tmp_path, tiny=True)

    assert markdown == tmp_path / "footprint.md"
    result = _written(tmp_path, "footprint")
    empty, *models = result["results"]
    assert empty["median"]["healthy_s"] > 0 and empty["median"]["rss_ready_mb"] > 0
    assert [r["bundle"] for r in models] == ["lit_demo", "clip_tiny"]
    for bundle in models:
        median = bundle["median"]
        assert median["ready_s"] > 0 and median["model_s"] >= 0
        assert median["rss_ready_mb"] > 0 and 0 < median["rss_warm_mb"] <= median["peak_mb"]


def test_cpu_int8_tiny(tmp_path: Path) -> None:
    markdown = cpu_int8.run(tmp_path, tiny=True)

    assert markdown == tmp_path / "cpu_int8.md"
    result = _written(tmp_path, "cpu_int8")
    for precision in ("fp32", "int8"):
        images, labels = result["results"][precision]["images"], result["results"][precision]["labels"]
        assert images["raw_best"]["images_per_s"] > 0 and labels["raw_best"]["prompts_per_s"] > 0
        assert all(level["errors"] == 0 for level in images["levels"])
    for gateway, raw in result["ratios"].values():
        assert gateway > 0 and raw > 0
    assert "target 1.5x" in markdown.read_text()
