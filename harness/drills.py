"""The load and overload drills against a real gateway process, their figures and their checks.

*Load*: closed-loop clients, each on one keep-alive connection, sending ``POST /v1/classify`` with one or
two of a few distinct synthetic images whose answers differ (:mod:`harness.workload`). Figures: requests
and images/s, latency p50/p99, 5xx and other statuses, wrong answers, transport failures, and the
gateway's RSS after the warm-up and at the end (which must stay within ``RSS_GROWTH_LIMIT``).

*Overload*: far more clients than a gateway with a small ``LIT_MAX_QUEUE_IMAGES`` can serve, in two
phases: *polite* clients wait what a 429's ``Retry-After`` says (with jitter) before they try again, a
*flood* sends again at once. Requests beyond the queue must get 429 ``overloaded`` with ``Retry-After``,
fast (polite: within a few idle latencies; flood: sooner than served requests, which wait for the queue),
with no 5xx; RSS must stay within an envelope and stop growing; once the load stops, single requests
must be as fast as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from harness.load import Load, Outcome, sequential
from harness.usage import CpuMeter, rss_bytes
from harness.workload import Workload

RSS_GROWTH_LIMIT = 0.10  # RSS at the end of the load over RSS after the warm-up, less one


# -- figures --------------------------------------------------------------------------------------


def percentile_ms(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q)) if len(values) else float("nan")


def summarize(outcomes: Sequence[Outcome], since: float, until: float) -> dict[str, Any]:
    """Figures over the outcomes that finished in ``[since, until)``."""
    window = [o for o in outcomes if since <= o.finished < until]
    ok = [o for o in window if o.status == 200]
    refused = [o for o in window if o.status == 429]
    seconds = min(until, max((o.finished for o in window), default=since)) - since or float("nan")
    statuses: dict[str, int] = {}
    for o in window:
        key = str(o.status) if o.status else o.failure
        statuses[key] = statuses.get(key, 0) + 1
    return {
        "window_s": seconds,
        "requests": len(window),
        "ok": len(ok),
        "requests_per_s": len(ok) / seconds,
        "images_per_s": sum(o.images for o in ok) / seconds,
        "p50_ms": percentile_ms([o.latency for o in ok], 50),
        "p99_ms": percentile_ms([o.latency for o in ok], 99),
        "max_ms": percentile_ms([o.latency for o in ok], 100),
        "http_5xx": sum(o.status >= 500 for o in window),
        "wrong": sum(o.wrong for o in ok),
        "no_response": sum(o.status == 0 for o in window),
        "overloaded": len(refused),
        "overloaded_p50_ms": percentile_ms([o.latency for o in refused], 50),
        "overloaded_p99_ms": percentile_ms([o.latency for o in refused], 99),
        "statuses": statuses,
    }


# -- the drills -----------------------------------------------------------------------------------


def load_drill(
    url: str, work: Workload, clients: int, seconds: float, warmup_s: float, pid: int
) -> dict[str, Any]:
    """``clients`` clients for ``warmup_s + seconds``; figures over the last ``seconds``, RSS at the
    warm-up's end and at the end."""
    load = Load(url, work.samples, work.answers, clients, warmup_s + seconds, pid=pid)
    with CpuMeter(pid) as cpu, load:
        load.wait()
    begin, end = load.started + warmup_s, load.started + warmup_s + seconds
    figures = summarize(load.outcomes, begin, end)
    warm, last = load.rss_at(begin), load.rss_at(end)
    figures |= {
        "clients": clients,
        "warmup_s": warmup_s,
        "rss_warm_mb": warm / 2**20,
        "rss_end_mb": last / 2**20,
        "rss_max_mb": max(r for t, r in load.rss if t <= end) / 2**20,
        "rss_growth": last / warm - 1,
        "all_outcomes": summarize(load.outcomes, load.started, float("inf"))["statuses"],
        "gateway_cores": cpu.gateway_cores,
        "client_cores": cpu.own_cores,
        "other_cores": cpu.other_cores,
    }
    return figures


def load_failures(figures: dict[str, Any]) -> list[str]:
    """What a load run got wrong (empty when it passed)."""
    failures = []
    if figures["ok"] == 0:
        failures.append("no successful request")
    if figures["http_5xx"]:
        failures.append(f"{figures['http_5xx']} responses with status 5xx")
    if figures["wrong"]:
        failures.append(f"{figures['wrong']} responses with answers that are not their images' own")
    others = {k: v for k, v in figures["all_outcomes"].items() if k != "200"}
    if others:
        failures.append(f"requests that did not get a 200: {others}")
    if figures["rss_growth"] > RSS_GROWTH_LIMIT:
        failures.append(
            f"RSS grew {figures['rss_growth']:.1%} after the warm-up "
            f"({figures['rss_warm_mb']:.0f} -> {figures['rss_end_mb']:.0f} MB; limit {RSS_GROWTH_LIMIT:.0%})"
        )
    return failures


def overload_phase(
    url: str, work: Workload, clients: int, seconds: float, pid: int, honour_retry_after: bool
) -> dict[str, Any]:
    """``clients`` clients for ``seconds``, starting over its first fifth (at most 1 s): a flood (each
    sends again at once after a 429) or polite clients (each waits as the 429's ``Retry-After`` says)."""
    ramp = min(1.0, seconds / 5)
    load = Load(url, work.samples, work.answers, clients, seconds, pid=pid, sample_s=0.2, ramp_s=ramp,
                honour_retry_after=honour_retry_after)  # fmt: skip
    with CpuMeter(pid) as cpu, load:
        load.wait()
    figures = summarize(load.outcomes, load.started, float("inf"))
    refusals = [o for o in load.outcomes if o.status == 429]
    first_half = [r for t, r in load.rss if t < load.started + seconds / 2]
    return figures | {
        "clients": clients,
        "honour_retry_after": honour_retry_after,
        "overloaded_codes": sorted({o.code for o in refusals}),
        "overloaded_retry_after": sorted({o.retry_after for o in refusals}),
        "rss_first_half_max_mb": max(first_half) / 2**20,
        "rss_max_mb": max(r for _, r in load.rss) / 2**20,
        "rss_end_mb": load.rss[-1][1] / 2**20,
        "gateway_cores": cpu.gateway_cores,
        "client_cores": cpu.own_cores,
        "other_cores": cpu.other_cores,
    }


PHASES = {"polite": True, "flood": False}  # name -> honour Retry-After


def overload_drill(
    url: str, work: Workload, clients: int, seconds: float, pid: int, probes: int = 30, warmup_s: float = 2.0
) -> dict[str, Any]:
    """A warm-up (8 clients for ``warmup_s``), single requests to the idle gateway (``probes``), then
    ``clients`` polite clients for ``seconds``, then a flood of ``clients`` for ``seconds``, then single
    requests again."""
    with Load(url, work.samples, work.answers, min(clients, 8), warmup_s) as warmup:
        warmup.wait()
    before = sequential(url, work, probes)
    rss_before = rss_bytes(pid)
    phases = {
        name: overload_phase(url, work, clients, seconds, pid, polite) for name, polite in PHASES.items()
    }
    after = sequential(url, work, probes)
    return {
        "clients": clients,
        "seconds": seconds,
        "idle_p50_ms_before": percentile_ms([o.latency for o in before if o.status == 200], 50),
        "idle_p50_ms_after": percentile_ms([o.latency for o in after if o.status == 200], 50),
        "idle_statuses": sorted({o.status for o in before + after}),
        "idle_wrong": sum(o.wrong for o in before + after),
        "rss_before_mb": rss_before / 2**20,
        "warmup_statuses": summarize(warmup.outcomes, warmup.started, float("inf"))["statuses"],
        "phases": phases,
    }


OVERLOAD_RSS_GROWTH = 0.10  # RSS at the end of a phase over the highest in its first half, less one
OVERLOAD_RSS_ENVELOPE = 0.25  # the highest RSS while overloaded over the RSS before, less one
RECOVERY_FACTOR = 3.0  # idle p50 after the overload may be this many times the one before (+ 5 ms)
POLITE_FACTOR = 5.0  # with polite clients, 429 p50 may be this many times the idle p50 (+ 20 ms)


def overload_failures(figures: dict[str, Any]) -> list[str]:
    """What an overload run got wrong (empty when it passed). The factors are generous: this machine is
    shared, and the load generator runs on the gateway's cores."""
    failures = []
    idle = figures["idle_p50_ms_before"]
    for name, phase in figures["phases"].items():
        if not phase["overloaded"]:
            failures.append(f"{name}: no request got a 429: the load never reached the queue's bound")
        if phase["http_5xx"] or phase["no_response"] or phase["wrong"]:
            failures.append(
                f"{name}: 5xx {phase['http_5xx']}, no response {phase['no_response']}, wrong {phase['wrong']}"
            )
        if phase["overloaded_codes"] not in ([], ["overloaded"]):
            failures.append(f"{name}: 429 error codes {phase['overloaded_codes']}, expected ['overloaded']")
        if not all(value.isdigit() and int(value) >= 1 for value in phase["overloaded_retry_after"]):
            failures.append(f"{name}: 429s with Retry-After {phase['overloaded_retry_after']}")
        if phase["rss_end_mb"] > (1 + OVERLOAD_RSS_GROWTH) * phase["rss_first_half_max_mb"]:
            failures.append(
                f"{name}: RSS grew through the overload: {phase['rss_first_half_max_mb']:.0f} MB in its "
                f"first half, {phase['rss_end_mb']:.0f} MB at its end"
            )
    highest = max(phase["rss_max_mb"] for phase in figures["phases"].values())
    if highest > (1 + OVERLOAD_RSS_ENVELOPE) * figures["rss_before_mb"]:
        failures.append(
            f"RSS rose from {figures['rss_before_mb']:.0f} MB to {highest:.0f} MB while overloaded"
        )
    polite, flood = figures["phases"].get("polite"), figures["phases"].get("flood")
    if polite and polite["overloaded_p50_ms"] > POLITE_FACTOR * idle + 20:
        failures.append(
            f"polite: 429s took {polite['overloaded_p50_ms']:.0f} ms (p50); an idle request {idle:.1f} ms"
        )
    if flood and flood["ok"] and not flood["overloaded_p50_ms"] < flood["p50_ms"]:
        failures.append(
            f"flood: 429s ({flood['overloaded_p50_ms']:.0f} ms p50) were not faster than served requests "
            f"({flood['p50_ms']:.0f} ms p50): rejected requests must not wait for the queue"
        )
    if figures["idle_statuses"] != [200] or figures["idle_wrong"]:
        failures.append(
            f"single requests: statuses {figures['idle_statuses']}, wrong {figures['idle_wrong']}"
        )
    after = figures["idle_p50_ms_after"]
    if after > RECOVERY_FACTOR * idle + 5:
        failures.append(
            f"latency did not recover: p50 {idle:.1f} ms before the overload, {after:.1f} ms after"
        )
    return failures
