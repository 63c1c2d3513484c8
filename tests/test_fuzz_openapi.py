"""Schemathesis against the real gateway's own ``/openapi.json``: no 5xx, and every answer as documented.

One uvicorn gateway on 127.0.0.1 serves the committed demo model. Schemathesis (its CLI, ``st run``) reads
the gateway's OpenAPI document and, for every operation, sends the schema's examples, its coverage cases
(boundary values, schema violations, undocumented methods), Hypothesis-generated cases, valid and invalid,
and stateful sequences that follow the label-set links (PUT, then GET and DELETE). Every answer must pass:

- ``not_a_server_error``: no 5xx;
- ``status_code_conformance``, ``content_type_conformance``, ``response_headers_conformance``,
  ``response_schema_conformance``: the status is documented for the route (error statuses are, with the
  ``ErrorBody`` model) and body and headers match what is documented for it;
- ``negative_data_rejection`` and ``missing_required_header``: a request that breaks the schema gets a 4xx;
- ``unsupported_method`` and ``allow_header_conformance``: an undocumented method is a 405 whose ``Allow``
  lists exactly the documented ones;
- ``use_after_free`` and ``ensure_resource_availability``: a deleted label set is gone, a new one is there.

Reproducible: a fixed seed and deterministic generation (which keeps no example database). Bounded: a
fixed number of examples per operation, one worker, a timeout per request and for the whole run. The HAR
file of every request sent is read back to count them (at least ``MIN_CASES``) and to check that each went
to 127.0.0.1 and none got a 5xx. (Schemathesis' pytest plugin is not used: it sets ``Node._nodeid``, which
pytest 9 no longer has.)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from harness.gateway import running_gateway

SEED = 20_260_801
MAX_EXAMPLES = 50  # per operation in the fuzzing phase; the examples, coverage and stateful phases add theirs
MIN_CASES = 500
REQUEST_TIMEOUT_S = 30
RUN_TIMEOUT_S = 300
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "use_after_free",
    "ensure_resource_availability",
]
# The `st` command, run with this interpreter (whichever venv it is, whatever is on PATH).
SCHEMATHESIS = [
    sys.executable,
    "-c",
    "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    workdir = tmp_path_factory.mktemp("fuzz")
    with running_gateway(workdir) as url:
        yield url, workdir


def run_schemathesis(url: str, workdir: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    har = workdir / "requests.har"
    command = [
        *SCHEMATHESIS, "run", f"{url}/openapi.json",
        "--url", url,
        "--seed", str(SEED),
        "--generation-deterministic",
        "--mode", "all",
        "--max-examples", str(MAX_EXAMPLES),
        "--phases", "examples,coverage,fuzzing,stateful",
        "--checks", ",".join(CHECKS),
        "--workers", "1",
        "--request-timeout", str(REQUEST_TIMEOUT_S),
        "--continue-on-failure",
        "--no-color",
        "--report", "har",
        "--report-har-path", str(har),
    ]  # fmt: skip
    # cwd: a folder without a schemathesis.toml, so no configuration is picked up from elsewhere.
    run = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    return run, har


BODY_METHODS = {"post", "put", "patch"}


def operations(spec: dict) -> dict[str, tuple[str, str]]:
    return {f"{m.upper()} {path}": (m, path) for path, ops in spec["paths"].items() for m in ops}


def operation_patterns(spec: dict) -> dict[str, re.Pattern[str]]:
    """``"GET /v1/label-sets/{name}"`` -> a regex over request paths."""
    patterns = {}
    for path, operations in spec["paths"].items():
        regex = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "$")
        for method in operations:
            patterns[f"{method.upper()} {path}"] = regex
    return patterns


def test_schemathesis_finds_nothing(gateway: tuple[str, Path]) -> None:
    url, workdir = gateway
    assert urlsplit(url).hostname == "127.0.0.1"
    spec = httpx.get(f"{url}/openapi.json", timeout=10).json()
    run, har = run_schemathesis(url, workdir)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-8000:]

    entries = json.loads(har.read_text())["log"]["entries"]
    sent = [(e["request"]["method"], urlsplit(e["request"]["url"])) for e in entries]
    assert {u.hostname for _, u in sent} == {"127.0.0.1"}, "requests only ever go to the local gateway"
    server_errors = [(m, u.path, e["response"]["status"]) for (m, u), e in zip(sent, entries, strict=True)]
    assert not [s for s in server_errors if s[2] >= 500], server_errors

    per_operation: Counter[str] = Counter()
    patterns = operation_patterns(spec)
    for method, parts in sent:
        ops = [op for op, rx in patterns.items() if op.startswith(f"{method} ") and rx.match(parts.path)]
        per_operation[ops[0] if ops else f"{method} (undocumented)"] += 1
    print(f"\nschemathesis sent {len(entries)} requests: {dict(sorted(per_operation.items()))}")
    assert len(entries) >= MIN_CASES, (len(entries), per_operation)
    assert len(patterns) >= 11, sorted(patterns)  # health, readiness, metrics and the eight /v1 routes
    # Operations without parameters or body (health, metrics, models) have little to vary; the rest must
    # have been fuzzed in earnest.
    varied = {op for op, (method, path) in operations(spec).items() if "{" in path or method in BODY_METHODS}
    thin = {op: per_operation[op] for op in patterns if per_operation[op] < (20 if op in varied else 1)}
    assert not thin, f"operations (nearly) never exercised: {thin}; {per_operation}"
    summary = re.search(r"(\d+) generated, (\d+) passed", output)
    assert summary and summary.group(1) == summary.group(2), output[-3000:]

    # The gateway took all of it and still answers.
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    log = next(workdir.glob("gateway-*.log")).read_text()
    assert "unhandled error" not in log and "Traceback" not in log, log[-3000:]
