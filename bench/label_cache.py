"""Benchmark: a classify request with 1,000 labels, first (labels encoded) and again (all cached).

Starts a real gateway on the committed demo model and prints the two latencies, their ratio and the
text-cache counters. Run: ``.venv/bin/python -m bench.label_cache``.
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

import httpx

from harness.gateway import running_gateway
from harness.images import encode
from harness.metrics import metric
from training.data.synthetic import SyntheticWorld


def main(labels: int = 1000, repeats: int = 5) -> None:
    image = SyntheticWorld(seed=11).sample("eval", 3)[0]
    body = {
        "images": [base64.b64encode(encode(image)).decode()],
        "labels": [f"thing {i}" for i in range(labels)],
    }
    with tempfile.TemporaryDirectory() as work, running_gateway(Path(work)) as url:
        first = httpx.post(f"{url}/v1/classify", json=body, timeout=300)
        misses = metric(url, "lit_text_cache_misses_total")
        cached = [httpx.post(f"{url}/v1/classify", json=body, timeout=300) for _ in range(repeats)]
        assert all(r.status_code == 200 for r in [first, *cached])
        first_ms = first.elapsed.total_seconds() * 1000
        cached_ms = sorted(r.elapsed.total_seconds() * 1000 for r in cached)[repeats // 2]
        print(f"| labels | first (ms) | cached, median of {repeats} (ms) | speed-up | text-encoder misses |")
        print("|---|---|---|---|---|")
        print(f"| {labels} | {first_ms:.0f} | {cached_ms:.1f} | {first_ms / cached_ms:.0f}x | "
              f"{misses:.0f} -> {metric(url, 'lit_text_cache_misses_total'):.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
