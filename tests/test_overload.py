"""Overload: a gateway with a queue of 8 images and 256 clients.

Two phases of 4 s (``harness/drills.py``): polite clients (after a 429 they wait what ``Retry-After`` says,
with jitter) and a flood (they send again at once). Requests beyond the bounded queue get 429
``overloaded`` with a ``Retry-After`` header: with polite clients within 5 idle latencies + 20 ms (p50),
in the flood sooner than served requests; nothing gets a 5xx or goes unanswered; every 200 is right;
RSS stays within 25% of before and does not grow through a phase by 10%; after the load, single requests
are as fast as before (within 3x + 5 ms). Thresholds compare figures of the same run, generously: the
machine is shared.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness import drills, workload
from harness.gateway import gateway_pid, running_gateway
from harness.metrics import metric

QUEUE = 8
CLIENTS = 256


def test_far_too_many_clients_get_fast_429s_and_the_gateway_recovers(tmp_path: Path) -> None:
    with running_gateway(tmp_path, LIT_MAX_QUEUE_IMAGES=str(QUEUE)) as url:
        work = workload.prepare(url)
        figures = drills.overload_drill(url, work, CLIENTS, seconds=4, pid=gateway_pid(), probes=20)
        counted = metric(url, 'lit_requests_total{route="/v1/classify",status="429"}')
        capacity = metric(url, "lit_queue_capacity")
    print(json.dumps(figures, indent=2))
    assert drills.overload_failures(figures) == []
    refused = sum(phase["overloaded"] for phase in figures["phases"].values())
    assert refused > 0
    assert counted == refused + figures["warmup_statuses"].get("429", 0)  # as many as the clients saw
    assert capacity == QUEUE
    for phase in figures["phases"].values():
        assert phase["ok"] > 0  # the queue's share was still served
        assert phase["statuses"].keys() <= {"200", "429"}
