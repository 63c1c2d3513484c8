"""Sustained load on the embedded backend: the documented command at a short length.

``python -m bench.load --clients 64 --seconds 60`` is the full run; CI runs the same command for
10 s after a 4 s warm-up. It starts a real gateway on the committed demo model, takes each image's answer
from the idle gateway, and drives 64 closed-loop clients: no 5xx, no other status, every response gives
each of its images that image's own answer, RSS at the end within 10% of RSS after the warm-up.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from harness import drills, workload
from harness.gateway import ROOT, running_gateway
from tests.samples import Reference


def test_the_checker_catches_a_response_that_carried_another_image() -> None:
    answers = [{"red circle": 0.9, "blue star": 0.1}, {"red circle": 0.2, "blue star": 0.8}]

    def body(*scores: dict[str, float]) -> bytes:
        results = [
            {"predictions": [{"label": k, "score": v} for k, v in sorted(s.items(), key=lambda kv: -kv[1])]}
            for s in scores
        ]
        return json.dumps({"results": results}).encode()

    assert not workload.is_wrong(body(answers[0], answers[1]), (0, 1), answers)
    assert workload.is_wrong(body(answers[1], answers[0]), (0, 1), answers)  # swapped within the request
    assert workload.is_wrong(body(answers[1]), (0,), answers)  # another request's image
    assert workload.is_wrong(body(answers[0]), (0, 1), answers)  # a result missing
    drifted = {"red circle": 0.9 + 2e-4, "blue star": 0.1 - 2e-4}
    assert workload.is_wrong(body(drifted), (0,), answers)
    assert not workload.is_wrong(body({"red circle": 0.9 + 5e-5, "blue star": 0.1 - 5e-5}), (0,), answers)
    assert workload.is_wrong(b'{"error": {"code": "x"}}', (0,), answers)


def test_reference_answers_are_the_bundles_own(tmp_path: Path) -> None:
    """The answers the load is checked against come from the idle gateway; they equal what the bundle's
    ONNX files give directly, and their top labels differ from image to image."""
    with running_gateway(tmp_path) as url:
        work = workload.prepare(url, images=8)
    expected = Reference().scores(work.blobs, work.labels, None)
    got = np.array([[answer[label] for label in work.labels] for answer in work.answers])
    assert np.abs(got - expected).max() <= 1e-5
    assert len({row.argmax() for row in got}) == 8
    assert {s.images for s in work.samples} >= {(i,) for i in range(8)} | {(i, (i + 1) % 8) for i in range(8)}


def test_64_clients_the_documented_command_short(tmp_path: Path) -> None:
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "bench.load", "--clients", "64", "--seconds", "10", "--warmup", "4",
         "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    print(done.stdout[-3000:], f"\n({time.monotonic() - began:.0f} s in all)")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads((tmp_path / "load.json").read_text())
    assert figures["failures"] == []
    assert figures["http_5xx"] == figures["wrong"] == figures["no_response"] == 0
    assert figures["all_outcomes"].keys() == {"200"}
    assert figures["ok"] >= 64 and figures["images_per_s"] > 0
    assert 0 < figures["p50_ms"] <= figures["p99_ms"]
    assert figures["rss_growth"] <= drills.RSS_GROWTH_LIMIT
    for name in ("p50 / p99", "images/s", "5xx responses", "wrong answers", "RSS after warm-up / end"):
        assert name in done.stdout
