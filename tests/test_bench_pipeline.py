"""The gateway-vs-pipeline benchmark runs end to end at tiny size, and both sides pick the same labels.

No timing thresholds: the figures of a tiny run mean nothing. What is checked is that the benchmark
works, writes its three files, and that the comparison is sound (same top-1 on every image, labels
served from the cache while timed).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.clip_model import WORDS, benchmark_labels, clip_tokenizer
from bench.pipeline import run

pytest.importorskip("transformers")
pytest.importorskip("matplotlib")


def test_labels_are_distinct_deterministic_and_one_token_per_word() -> None:
    labels = benchmark_labels(1000)
    assert len(set(labels)) == 1000 and labels == benchmark_labels(1000)
    assert all(1 <= len(label.split()) <= 3 for label in labels)
    tokenizer = clip_tokenizer()
    for label in labels[:50]:
        ids = tokenizer(f"a photo of a {label}.")["input_ids"]
        assert len(ids) == len(label.split()) + 7  # start, a photo of a, label words, ".", end
    assert len(WORDS) > 250


def test_tiny_pipeline_benchmark(tmp_path: Path) -> None:
    markdown = run(tmp_path / "out", tiny=True, work=tmp_path / "work")
    out = markdown.parent
    assert {p.name for p in out.iterdir()} >= {"pipeline.md", "pipeline.json", "pipeline.png"}
    assert (out / "pipeline.png").stat().st_size > 1000
    result = json.loads((out / "pipeline.json").read_text())
    rows = result["rows"]
    assert [r["labels"] for r in rows] == [3, 10, 30]
    for row in rows:
        for key in (
            "pipeline_ms", "gateway_median_ms", "gateway_p95_ms", "label_set_median_ms", "speedup",
            "encoder_ms",
        ):  # fmt: skip
            assert math.isfinite(row[key]) and row[key] > 0, (key, row)
        assert row["gateway_p95_ms"] >= row["gateway_median_ms"]
        assert row["top1_agree"] == row["images"]
        assert row["text_cache_misses_while_timed"] == 0
    agreement = result["top1_agreement"]
    assert agreement["agree"] == agreement["total"] == sum(r["images"] for r in rows)
    assert result["max_top1_score_diff"] < 1e-4
    text = markdown.read_text()
    assert "Top-1 agreement between the gateway and the pipeline: 9/9" in text
    assert "![Gateway vs the transformers pipeline](pipeline.png)" in text
