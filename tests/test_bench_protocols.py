"""The protocol benchmark (bench/kserve_protocols.py) at its tiny size: one gateway with gRPC on, every
mode and cell measured without errors, the three modes agreeing on the scores.

No speed thresholds: the figures of a tiny run on a shared machine mean nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench import kserve_protocols


def test_kserve_protocols_tiny(tmp_path: Path) -> None:
    markdown = kserve_protocols.run(tmp_path, tiny=True)

    assert markdown == tmp_path / "kserve_protocols.md"
    for suffix in ("md", "json", "png"):
        assert (tmp_path / f"kserve_protocols.{suffix}").stat().st_size > 0
    result = json.loads((tmp_path / "kserve_protocols.json").read_text())
    plan = kserve_protocols.TINY
    cells = {(r["mode"], r["images"], r["clients"]) for r in result["results"]}
    assert cells == {(m, i, c) for m in kserve_protocols.MODES for i in plan.shapes for c in plan.concurrency}
    for row in result["results"]:
        assert row["errors"] == 0 and row["requests"] > 0, row
        assert 0 < row["p50_ms"] <= row["p95_ms"] and row["requests_per_s"] > 0
        assert row["gateway_cpu_ms"] > 0
    checks = result["checks"]
    assert max(checks["max_abs_diff_vs_http_json"].values()) < 1e-5  # the same scores every way
    for images in plan.shapes:  # base64 makes JSON the biggest request
        sizes = {mode: checks["request_bytes"][mode][str(images)] for mode in kserve_protocols.MODES}
        assert sizes["http-json"] > sizes["http-binary"] > 0 and sizes["grpc"] > 0
    assert "gRPC" in markdown.read_text()
