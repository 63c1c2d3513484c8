"""Monitoring: Prometheus config and alert rules (promtool), Grafana provisioning and dashboard, and a real
Prometheus scraping a real gateway and Triton.

Every metric name in the dashboard and the alert rules is checked against a source that really exports it:
``lit_*`` names against a scrape of a running gateway (a counter that has no sample until its event happens,
such as a GPU decode fallback, is still declared there); ``nv_*`` names against a scrape of a running Triton
(the ``tritonserver`` of ``nvidia-pytriton``, CPU only) and, for GPU-only metrics that a CPU Triton does not
export (``nv_gpu_utilization``), against the metric names compiled into Triton's own library
(``libtritonserver*.so`` in ``nvidia_pytriton.libs``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from harness.gateway import REPOSITORY, free_port, running_gateway, stop_process
from harness.images import LABELS
from tests.samples import images
from tests.triton_server import TritonServer, pytriton_root, running_triton

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "lit-gateway.json"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "lit.yml"


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed: run scripts/system-deps.sh (Debian package prometheus)"
    return path


def run_tool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=120, cwd=ROOT)


# PromQL metric names -------------------------------------------------------------------------------------
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
KEYWORDS |= {"offset", "inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels, keywords and literals removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery windows, $__rate_interval
    text = re.sub(r"\$\w+", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        token, call = match.group(1), match.group(2)
        if not call and token.lower() not in KEYWORDS:
            names.add(token)
    return names


def label_names(expr: str) -> set[str]:
    """Label names used in matchers and in by/without clauses (``le`` included)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    found = set()
    for block in re.findall(r"\{([^}]*)\}", text):
        found |= set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", block))
    for block in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", text):
        found |= {name.strip() for name in block.split(",") if name.strip()}
    return found


def test_metric_name_extraction():
    expr = (
        'sum by (route, le) (rate(lit_x_bucket{route!~"/a|nv_fake", status=~"5.."}[$__rate_interval]))'
        " / on(job) group_left up or vector(0) and histogram_quantile(0.5, nv_y) > bool 2"
    )
    assert metric_names(expr) == {"lit_x_bucket", "up", "nv_y"}
    assert label_names(expr) == {"route", "status", "le"}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def alert_rules() -> list[dict[str, Any]]:
    spec = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    return [rule for group in spec["groups"] for rule in group["rules"]]


def all_exprs() -> list[str]:
    return dashboard_exprs() + [rule["expr"] for rule in alert_rules()]


def used_names(prefix: str) -> set[str]:
    return {n for e in all_exprs() for n in metric_names(e) if n.startswith(prefix)}


def declared_lit_metrics() -> dict[str, set[str]]:
    """Each ``lit_*`` sample name the gateway registers -> its label names, whether or not it has a sample
    yet (a labelled counter has none before its first event)."""
    from service.metrics import Metrics

    found: dict[str, set[str]] = {}
    for collector in vars(Metrics()).values():
        if not isinstance(collector, MetricWrapperBase):
            continue
        name, labels = collector._name, set(collector._labelnames)
        if collector._type == "counter":
            found[f"{name}_total"] = labels
        elif collector._type == "histogram":
            found.update({f"{name}_bucket": labels | {"le"}, f"{name}_sum": labels, f"{name}_count": labels})
        else:
            found[name] = labels
    return found


def per_model_metrics() -> set[str]:
    return {name for name, labels in declared_lit_metrics().items() if "model" in labels}


def selectors(expr: str, name: str) -> list[str]:
    """The label matchers (``""`` when none) of each place ``expr`` selects metric ``name``."""
    matchers = r'(\{(?:"(?:[^"\\]|\\.)*"|[^}"])*\})?'  # quoted values may hold braces: ${model}
    return [m.group(1) or "" for m in re.finditer(rf"(?<![\w:]){name}(?![\w:]){matchers}", expr)]


def test_queries_use_only_gateway_triton_and_up_metrics():
    names = {n for e in all_exprs() for n in metric_names(e)}
    assert names, "no metric names found"
    assert all(n.startswith(("lit_", "nv_")) or n == "up" for n in names), names


# promtool ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ("check", "config", "deploy/prometheus/prometheus.yml"),
        ("check", "rules", "deploy/prometheus/alerts.yml"),
        ("test", "rules", "deploy/prometheus/alerts_test.yml"),
    ],
    ids=" ".join,
)
def test_promtool(args):
    result = run_tool(tool("promtool"), *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


def test_alert_rules_are_actionable():
    rules = alert_rules()
    names = {rule["alert"] for rule in rules}
    for expected in ("LitGatewayHighErrorRate", "LitGatewayHighLatency", "LitGatewayQueueSaturated"):
        assert expected in names
    for expected in ("LitBackendDown", "LitGatewayTargetDown", "LitTextCacheHitRatioLow"):
        assert expected in names
    assert {"LitModelVersionRefused", "LitModelNotLoaded", "LitModelsThrashing"} <= names
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS_DIR / "alerts_test.yml").read_text()))
    assert tested == names, f"alerts without a promtool test: {names - tested}"
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and len(rule["annotations"]["description"]) > 100


def test_alerts_on_a_models_metrics_name_the_model():
    """An alert over per-model series keeps the ``model`` label (no by() drops it) and its summary says which
    model; only the unload churn is a gateway's matter (it is about the budget of all its models)."""
    per_model = per_model_metrics()
    for rule in alert_rules():
        used = metric_names(rule["expr"]) & per_model
        if not used or rule["alert"] == "LitModelsThrashing":
            continue
        for clause in re.findall(r"\bby\s*\(([^)]*)\)", rule["expr"]):
            assert "model" in {c.strip() for c in clause.split(",")}, rule["alert"]
        assert "{{ $labels.model }}" in rule["annotations"]["summary"], rule["alert"]
    refused = next(r for r in alert_rules() if r["alert"] == "LitModelVersionRefused")
    assert refused["expr"] == 'increase(lit_model_loads_total{outcome="refused"}[15m]) > 0'


def test_prometheus_config_scrapes_gateway_and_triton():
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["lit-gateway"]["static_configs"][0]["targets"] == ["gateway:8000"]
    assert jobs["lit-gateway"]["metrics_path"] == "/metrics"
    assert jobs["lit-triton"]["static_configs"][0]["targets"] == ["triton:8002"]


# Grafana -------------------------------------------------------------------------------------------------
def test_grafana_provisioning():
    sources = yaml.safe_load(DATASOURCES.read_text())
    assert sources["apiVersion"] == 1
    [source] = sources["datasources"]
    assert (source["type"], source["url"], source["access"]) == (
        "prometheus",
        "http://prometheus:9090",
        "proxy",
    )
    assert source["uid"] and source["isDefault"] is True
    providers = yaml.safe_load(DASHBOARD_PROVIDERS.read_text())
    assert providers["apiVersion"] == 1
    [provider] = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"
    # The dashboard's data source variable defaults to the provisioned data source.
    [variable] = [v for v in dashboard()["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus" and variable["current"]["value"] == source["uid"]


def test_dashboard_layout_and_targets():
    board = dashboard()
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and panel["description"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"] == panel["datasource"]


def test_dashboard_has_the_operational_panels():
    exprs = "\n".join(dashboard_exprs())
    for needle in (
        "sum by (route, status) (rate(lit_requests_total",
        "lit_batch_size",
        "lit_queue_depth",
        "lit_queue_capacity",
        "lit_text_cache_hits_total",
        "lit_text_cache_misses_total",
        "nv_gpu_utilization",
        "rate(nv_inference_queue_duration_us",
        "rate(nv_inference_request_success",
    ):
        assert needle in exprs, needle
    for quantile in ("0.5", "0.95", "0.99"):
        assert re.search(rf"histogram_quantile\({quantile}, .*lit_request_duration_seconds_bucket", exprs), (
            quantile
        )


def test_dashboard_filters_and_groups_by_model():
    [variable] = [v for v in dashboard()["templating"]["list"] if v["name"] == "model"]
    assert variable["type"] == "query" and variable["datasource"] == {
        "type": "prometheus",
        "uid": "${datasource}",
    }
    assert variable["definition"] == variable["query"]["query"] == "label_values(lit_model_info, name)"
    assert variable["multi"] and variable["includeAll"] and variable["allValue"] == ".*"
    per_model = per_model_metrics()
    filtered = set()
    for expr in dashboard_exprs():
        for name in metric_names(expr):
            if name in per_model:
                assert all('model=~"$model"' in m for m in selectors(expr, name)), expr
                for clause in re.findall(r"\bby\s*\(([^)]*)\)", expr):
                    assert "model" in {c.strip() for c in clause.split(",")}, expr
                filtered.add(name)
            elif name == "lit_model_info":
                assert all('name=~"$model"' in m for m in selectors(expr, name)), expr
            elif name.startswith("nv_inference_"):
                # a model's encoders are Triton's <model>_image and <model>_text
                assert all('model=~"${model}_(image|text)"' in m for m in selectors(expr, name)), expr
    assert {
        "lit_images_total",
        "lit_backend_up",
        "lit_model_loads_total",
        "lit_model_unloads_total",
    } <= filtered
    exprs = "\n".join(dashboard_exprs())
    for needle in (
        "lit_models_loaded",
        "lit_decode_fallbacks_total",
        "lit_inference_duration_seconds_bucket",
    ):
        assert needle in exprs, needle


def grafana_variables(expr: str) -> str:
    """``expr`` as Grafana sends it with every model chosen (the variable's All value)."""
    return re.sub(r"\$\{model\}|\$model\b", ".*", expr.replace("$__rate_interval", "1m"))


# Real gateway and Triton ---------------------------------------------------------------------------------
@dataclass
class Stack:
    gateway_url: str
    triton: TritonServer

    def traffic(self) -> None:
        """Classify twice with the same labels (cache misses, then hits) and embed texts."""
        blobs = images(2)
        files = [("images", (f"{i}.png", blob, "image/png")) for i, blob in enumerate(blobs)]
        for _ in range(2):
            response = httpx.post(
                f"{self.gateway_url}/v1/classify", files=files, data={"labels": LABELS[:5]}, timeout=30
            )
            assert response.status_code == 200, response.text
        response = httpx.post(
            f"{self.gateway_url}/v1/embed/text", json={"texts": ["a red circle"]}, timeout=30
        )
        assert response.status_code == 200, response.text

    def gateway_scrape(self) -> str:
        return httpx.get(f"{self.gateway_url}/metrics", timeout=10).text


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    """Triton serving the committed model, and a gateway sending its encoder work there (as in deploy/)."""
    workdir = tmp_path_factory.mktemp("monitoring")
    with ExitStack() as stack:
        triton = stack.enter_context(running_triton(REPOSITORY, workdir / "triton"))
        env = {"LIT_BACKEND": "triton", "LIT_TRITON_URL": triton.grpc_url, "LIT_TRITON_PROTOCOL": "grpc"}
        (workdir / "gateway").mkdir()
        url = stack.enter_context(running_gateway(workdir / "gateway", **env))
        result = Stack(url, triton)
        result.traffic()
        yield result


def families(scrape: str) -> dict[str, set[str]]:
    """Every family and sample name in a scrape -> the label names seen on it."""
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(scrape):
        names = {family.name, *(s.name for s in family.samples)}
        if family.type == "counter":  # declared by its TYPE line even before its first sample
            names.add(f"{family.name}_total")
        for name in names:
            found.setdefault(name, set()).update(label for s in family.samples for label in s.labels)
    return found


def sampled(scrape: str) -> set[str]:
    """The sample names a scrape has values for."""
    return {s.name for family in text_string_to_metric_families(scrape) for s in family.samples}


def test_gateway_exports_every_lit_metric_used(stack):
    exported = families(stack.gateway_scrape())
    used = used_names("lit_")
    assert len(used) >= 10, used
    missing = used - set(exported)
    assert not missing, f"used in the dashboard or alerts but not exported by the gateway: {missing}"
    # Labels: those in matchers and by() of gateway-only queries exist on the metrics queried (as registered
    # by the gateway for a counter with no sample yet).
    declared = declared_lit_metrics()
    for expr in all_exprs():
        names = metric_names(expr)
        if not names or not all(n.startswith("lit_") for n in names):
            continue
        known = {"job", "instance"}.union(*(exported[n] or declared[n] for n in names))
        assert label_names(expr) <= known, f"{expr}: labels {label_names(expr) - known} not exported"


def libtritonserver_names() -> set[str]:
    libs = pytriton_root().parent / "nvidia_pytriton.libs"
    [library] = libs.glob("libtritonserver*.so*")
    data = library.read_bytes()
    return {m.decode() for m in re.findall(rb"(?<![A-Za-z0-9_])nv_[a-z0-9_]+(?![a-z0-9_])", data)}


def test_triton_exports_every_nv_metric_used(stack):
    scraped = families(stack.triton.metrics())
    compiled = libtritonserver_names()
    assert "nv_gpu_utilization_typo" not in compiled
    sources = {}
    for name in sorted(used_names("nv_")):
        if name in scraped:
            sources[name] = "Triton scrape (CPU)"
        elif name in compiled:
            sources[name] = "libtritonserver.so (GPU-only, not exported without a GPU)"
        else:
            sources[name] = "NOT FOUND"
    assert "NOT FOUND" not in sources.values(), sources
    assert (
        sources["nv_inference_queue_duration_us"]
        == sources["nv_inference_request_success"]
        == "Triton scrape (CPU)"
    )
    assert sources["nv_gpu_utilization"].startswith("libtritonserver"), sources
    for expr in all_exprs():  # labels of Triton queries, where the scrape has the metrics
        names = metric_names(expr)
        if names and all(n in scraped for n in names) and all(n.startswith("nv_") for n in names):
            known = {"job", "instance"}.union(*(scraped[n] for n in names))
            assert label_names(expr) <= known, expr


def test_gateway_scrape_passes_promtool_check_metrics(stack):
    result = run_tool(tool("promtool"), "check", "metrics", stdin=stack.gateway_scrape())
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr
    )


# A real Prometheus ---------------------------------------------------------------------------------------
def gpu_only(expr: str, scraped: set[str]) -> bool:
    names = metric_names(expr)
    return bool(names) and all(n.startswith("nv_gpu_") and n not in scraped for n in names)


def wait_for(what: str, check, timeout_s: float = 30.0, log: Path | None = None):
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.3)


def test_real_prometheus_scrapes_the_stack_and_evaluates_dashboard_and_alerts(stack, tmp_path):
    # deploy/prometheus/prometheus.yml with its targets pointed at the local processes, scraping every second.
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(PROMETHEUS_DIR / rule) for rule in config["rule_files"]]
    targets = {"lit-gateway": stack.gateway_url.removeprefix("http://"),
               "lit-triton": f"127.0.0.1:{stack.triton.metrics_port}"}  # fmt: skip
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))

    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v1"
    log_path = tmp_path / "prometheus.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:

        def ready() -> bool:  # the API answers 503 in plain text until the server is ready
            assert process.poll() is None, log_path.read_text()[-3000:]
            try:
                return httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        def get(path: str, **params: str) -> Any:
            response = httpx.get(f"{api}/{path}", params=params, timeout=5)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["status"] == "success", body
            return body["data"]

        def targets_up() -> bool:
            active = get("targets")["activeTargets"]
            return {t["labels"]["job"]: t["health"] for t in active} == {
                "lit-gateway": "up",
                "lit-triton": "up",
            }

        wait_for("Prometheus ready", ready, log=log_path)
        wait_for("both targets up", targets_up, log=log_path)
        stack.traffic()  # after the first scrapes, so rates over the window see it

        def classify_rate() -> list:
            query = 'sum by (route, status) (rate(lit_requests_total{job="lit-gateway"}[1m]))'
            rows = get("query", query=query)["result"]
            return [
                r
                for r in rows
                if r["metric"] == {"route": "/v1/classify", "status": "200"} and float(r["value"][1]) > 0
            ]

        wait_for("a classify request rate", classify_rate, log=log_path)
        triton_rate = 'sum(rate(nv_inference_request_success{job="lit-triton"}[1m])) > 0'
        wait_for("a Triton request rate", lambda: get("query", query=triton_rate)["result"], log=log_path)
        series = get("query", query="lit_requests_total")["result"]
        assert {(s["metric"]["job"], s["metric"]["instance"]) for s in series} == {
            ("lit-gateway", targets["lit-gateway"])
        }

        # Every dashboard query runs; all but the GPU-only ones, and those of gateway counters that have
        # no sample before their event (a GPU decode fallback, a model unload), return data from these
        # two processes.
        scraped = set(families(stack.triton.metrics()))
        eventless = {n for n in declared_lit_metrics() if n not in sampled(stack.gateway_scrape())}
        for expr in dashboard_exprs():
            result = get("query", query=grafana_variables(expr))["result"]
            if gpu_only(expr, scraped) or metric_names(expr) <= eventless:
                assert result == [], expr
            else:
                assert result, f"no data for dashboard query {expr}"

        # The real alert rules load and evaluate cleanly; none of the "down" alerts is even pending.
        names = {rule["alert"] for rule in alert_rules()}

        def rules_evaluated() -> list:
            loaded = [r for g in get("rules")["groups"] for r in g["rules"]]
            return loaded if loaded and all(r["health"] == "ok" for r in loaded) else []

        loaded = wait_for("rules evaluated", rules_evaluated, log=log_path)
        assert {r["name"] for r in loaded} == names
        alerts = {a["labels"]["alertname"] for a in get("alerts")["alerts"]}
        down = {"LitGatewayUnavailable", "LitGatewayTargetDown", "LitBackendDown", "LitTritonDown"}
        assert not alerts & down, alerts
    finally:
        stop_process(process, 15)
