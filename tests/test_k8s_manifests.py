"""The Kubernetes manifests under ``deploy/k8s``: schema-valid, listed by their kustomizations, consistent.

Built-in kinds are validated by ``kubernetes-validate --strict`` (the Kubernetes 1.37 OpenAPI schemas it
ships; strict: unknown fields are errors). It has no schemas for CRD kinds and only warns about them, so
the Prometheus Operator's ``ServiceMonitor`` and ``PrometheusRule`` are validated against the pydantic
models that the PyPI package ``cloudcoil-models-prometheus-operator`` (0.80.1.0) generates from the
operator's CRD OpenAPI schemas (prometheus-operator v0.80.1): pydantic checks required fields, types and
patterns, and a round trip (validate, dump what was set) must give back the manifest unchanged, which
fails on any field the CRD does not define (the API server would drop it).

No cluster runs here, so the rest checks what a cluster would only reveal at run time: Services select
the pods and ports they mean, the gateway's settings point at the Triton and Redis Services and at the
mounted model repository, pods run as non-root, and the training Job's torchrun command finds rank 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
PROMETHEUS = ROOT / "deploy" / "prometheus"
KUBERNETES_VERSION = "1.37.0"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job"}


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


RESOURCES = [(path, doc) for path in manifest_files() for doc in load_documents(path)]


def resources(kind: str | None = None, folder: Path = K8S) -> list[dict[str, Any]]:
    return [doc for path, doc in RESOURCES if (kind is None or doc["kind"] == kind) and path.parent == folder]


def one(kind: str, name: str) -> dict[str, Any]:
    found = [doc for _, doc in RESOURCES if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def container(workload: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    containers = pod_spec(workload)["containers"]
    if name is None:
        assert len(containers) == 1
        return containers[0]
    return next(c for c in containers if c["name"] == name)


def env_of(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def service_port(service: dict[str, Any], port: int) -> dict[str, Any]:
    matches = [p for p in service["spec"]["ports"] if p["port"] == port]
    assert matches, f"Service {service['metadata']['name']} has no port {port}"
    return matches[0]


def container_port(workload: dict[str, Any], target: int | str) -> int:
    """The container port number a Service or probe ``target`` (name or number) reaches."""
    for c in pod_spec(workload)["containers"]:
        for p in c.get("ports", []):
            if target in (p.get("name"), p["containerPort"]):
                return p["containerPort"]
    raise AssertionError(f"{workload['metadata']['name']} has no container port {target!r}")


# Schema validation -------------------------------------------------------------------------------------
def test_builtin_kinds_pass_kubernetes_validate_strict():
    files = manifest_files()
    kubernetes_validate = Path(sys.executable).with_name("kubernetes-validate")
    run = subprocess.run(
        [
            str(kubernetes_validate),
            "--strict",
            "-k",
            KUBERNETES_VERSION,
            *(str(f.relative_to(ROOT)) for f in files),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    lines = output.splitlines()
    assert not [line for line in lines if line.startswith(("ERROR", "FATAL"))], output
    for path, doc in RESOURCES:
        rel = str(path.relative_to(ROOT))
        resource = f"{doc['kind'].lower()}/{doc['metadata']['name']}"
        if doc["kind"] in CRD_KINDS:  # validated in test_crd_kinds_match_the_operator_schema instead
            expected = f"WARN {rel} Couldn't find schema for kind {doc['kind']}"
        else:
            expected = f"INFO {rel} passed for resource {resource} against version 1.37"
        assert any(line.startswith(expected) for line in lines), f"no {expected!r} in:\n{output}"
    # Warnings (no schema) only for CRD kinds: nothing else may slip through unvalidated.
    crd_files = {str(p.relative_to(ROOT)) for p, doc in RESOURCES if doc["kind"] in CRD_KINDS}
    for line in lines:
        if line.startswith("WARN"):
            assert line.split()[1] in crd_files, line


def operator_model(kind: str):
    try:
        from cloudcoil.models.prometheus_operator import v1
    except ImportError:  # a failure, not a skip: CRD kinds would go unvalidated
        pytest.fail("pip install 'cloudcoil-models-prometheus-operator==0.80.1.0' (the dev extra has it)")

    return {"ServiceMonitor": v1.ServiceMonitor, "PrometheusRule": v1.PrometheusRule}[kind]


def crd_problems(doc: dict[str, Any]) -> str | None:
    """Why ``doc`` does not fit its CRD's schema, or None."""
    from pydantic import ValidationError

    try:
        model = operator_model(doc["kind"]).model_validate(doc)
    except ValidationError as exc:
        return str(exc)
    dumped = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    if dumped != doc:
        return f"fields the CRD does not define, or values it changes:\n{dumped}\n!=\n{doc}"
    return None


CRD_RESOURCES = [(path, doc) for path, doc in RESOURCES if doc["kind"] in CRD_KINDS]


@pytest.mark.parametrize(
    "doc", [doc for _, doc in CRD_RESOURCES], ids=[f"{p.name}:{d['kind']}" for p, d in CRD_RESOURCES]
)
def test_crd_kinds_match_the_operator_schema(doc):
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert crd_problems(doc) is None, crd_problems(doc)


def test_crd_validation_rejects_bad_manifests():
    """The check above can fail: an unknown field, a wrong type and a malformed duration are caught."""
    good = one("ServiceMonitor", "lit-gateway")
    assert crd_problems(good) is None
    endpoint = good["spec"]["endpoints"][0]
    for bad_endpoint in ({**endpoint, "scrapeIntervall": "15s"}, {**endpoint, "port": 8000}):
        bad = {**good, "spec": {**good["spec"], "endpoints": [bad_endpoint]}}
        assert crd_problems(bad) is not None, bad_endpoint
    bad = {**good, "spec": {**good["spec"], "endpoints": [{**endpoint, "interval": "15 seconds"}]}}
    assert crd_problems(bad) is not None
    rule = one("PrometheusRule", "lit")
    broken = yaml.safe_load(yaml.safe_dump(rule))
    broken["spec"]["groups"][0]["rules"][0]["severity"] = "critical"  # belongs under labels
    assert crd_problems(broken) is not None


# Kustomize -------------------------------------------------------------------------------------------
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "labels", "namespace", "images", "patches"}


@pytest.mark.parametrize(
    "kustomization", sorted(K8S.rglob("kustomization.yaml")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_kustomization_lists_exactly_its_folders_manifests(kustomization):
    spec = yaml.safe_load(kustomization.read_text())
    assert spec["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and spec["kind"] == "Kustomization"
    assert set(spec) <= KUSTOMIZATION_KEYS, set(spec) - KUSTOMIZATION_KEYS
    listed = spec["resources"]
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    for entry in listed:
        assert (kustomization.parent / entry).is_file(), f"{entry} does not exist"
    here = {p.name for p in kustomization.parent.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert set(listed) == here, f"unlisted: {here - set(listed)}, missing: {set(listed) - here}"


def test_every_manifest_folder_has_a_kustomization():
    for path in manifest_files():
        assert (path.parent / "kustomization.yaml").is_file(), path


def test_resources_are_namespace_agnostic_and_uniquely_named():
    keys = [(doc["kind"], doc["metadata"]["name"]) for _, doc in RESOURCES]
    assert len(keys) == len(set(keys)), keys
    for path, doc in RESOURCES:
        assert "namespace" not in doc["metadata"], f"{path.name}: set the namespace with kubectl -n"
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "lit", path.name


# Wiring between resources ----------------------------------------------------------------------------
def test_workload_selectors_match_their_pod_templates():
    for kind in ("Deployment", "StatefulSet"):
        for doc in resources(kind):
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert selects(doc["spec"]["selector"]["matchLabels"], labels), doc["metadata"]["name"]


@pytest.mark.parametrize("folder", [K8S, K8S / "training"], ids=["serving", "training"])
def test_services_select_one_workload_and_reach_its_ports(folder):
    workloads = [doc for kind in WORKLOAD_KINDS for doc in resources(kind, folder)]
    for service in resources("Service", folder):
        selector = service["spec"]["selector"]
        backends = [w for w in workloads if selects(selector, w["spec"]["template"]["metadata"]["labels"])]
        assert len(backends) == 1, f"Service {service['metadata']['name']} selects {len(backends)} workloads"
        for port in service["spec"]["ports"]:
            container_port(backends[0], port.get("targetPort", port["port"]))


def test_gateway_settings_point_at_triton_redis_and_the_model_repository(monkeypatch):
    from service.settings import Settings

    gateway = one("Deployment", "lit-gateway")
    c = container(gateway)
    env = env_of(c)
    assert c["image"] == "lit-gateway:latest"
    # Every variable is a real setting, and the values parse as the gateway will parse them.
    for name in env:
        assert name.startswith("LIT_") and name[4:].lower() in Settings.model_fields, name
    for key in [k for k in os.environ if k.startswith("LIT_")]:
        monkeypatch.delenv(key)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert (settings.host, settings.port, settings.backend) == ("0.0.0.0", 8000, "triton")
    assert container_port(gateway, "http") == settings.port

    host, port = settings.triton_url.split(":")
    triton = one("Deployment", "lit-triton")
    expected_port = {"grpc": 8001, "http": 8000}[settings.triton_protocol]
    assert (
        container_port(triton, service_port(one("Service", host), int(port))["targetPort"]) == expected_port
    )

    match = re.fullmatch(r"redis://([\w.-]+):(\d+)/\d+", settings.label_store)
    assert match, settings.label_store
    redis = one("StatefulSet", "lit-redis")
    assert container_port(redis, service_port(one("Service", match[1]), int(match[2]))["targetPort"]) == 6379

    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    mount = mounts[str(settings.repository)]
    assert mount.get("readOnly") is True
    volume = next(v for v in pod_spec(gateway)["volumes"] if v["name"] == mount["name"])
    one("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])


def test_gateway_probes_use_the_apps_health_routes():
    from service.app import create_app
    from service.settings import Settings

    routes = {getattr(r, "path", None) for r in create_app(Settings(label_store="unused")).routes}
    gateway = one("Deployment", "lit-gateway")
    c = container(gateway)
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] in routes, get
        assert container_port(gateway, get["port"]) == 8000


def test_triton_serves_the_same_repository_on_a_gpu():
    triton, gateway = one("Deployment", "lit-triton"), one("Deployment", "lit-gateway")
    c = container(triton)
    assert c["image"] == "nvcr.io/nvidia/tritonserver:25.10-py3"
    assert c["command"] == ["tritonserver"]
    args = c["args"]
    for arg in ("--model-repository=/models", "--model-control-mode=poll", "--repository-poll-secs=10"):
        assert arg in args
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod_spec(triton)["nodeSelector"], "schedule on GPU nodes"
    assert {container_port(triton, p) for p in ("http", "grpc", "metrics")} == {8000, 8001, 8002}
    ready = c["readinessProbe"]["httpGet"]
    assert ready["path"] == "/v2/health/ready" and container_port(triton, ready["port"]) == 8000

    def repository_claim(workload: dict[str, Any], path: str) -> str:
        mount = next(m for m in container(workload)["volumeMounts"] if m["mountPath"] == path)
        assert mount.get("readOnly") is True
        volume = next(v for v in pod_spec(workload)["volumes"] if v["name"] == mount["name"])
        return volume["persistentVolumeClaim"]["claimName"]

    assert (
        repository_claim(triton, "/models") == repository_claim(gateway, "/models") == "lit-model-repository"
    )
    assert one("Service", "lit-triton")["spec"]["selector"] == triton["spec"]["selector"]["matchLabels"]


def test_pods_run_as_non_root_with_resources():
    for path, doc in RESOURCES:
        if doc["kind"] not in WORKLOAD_KINDS:
            continue
        spec = pod_spec(doc)
        name = f"{path.name}:{doc['metadata']['name']}"
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert (
            isinstance(spec["securityContext"]["runAsUser"], int) and spec["securityContext"]["runAsUser"] > 0
        )
        assert spec.get("automountServiceAccountToken") is False, name
        for c in spec["containers"]:
            security = c["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), name
            assert "memory" in c["resources"]["limits"], name


def test_autoscaler_and_disruption_budget_cover_the_gateway():
    gateway = one("Deployment", "lit-gateway")
    hpa, pdb = one("HorizontalPodAutoscaler", "lit-gateway"), one("PodDisruptionBudget", "lit-gateway")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "lit-gateway",
    }
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert "cpu" in container(gateway)["resources"]["requests"], "CPU utilisation needs a CPU request"
    assert "replicas" not in gateway["spec"], "the autoscaler owns the replica count"
    assert hpa["spec"]["minReplicas"] >= 2
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]
    assert selects(pdb["spec"]["selector"]["matchLabels"], gateway["spec"]["template"]["metadata"]["labels"])


def test_service_monitors_scrape_the_jobs_that_alerts_and_compose_use():
    """ServiceMonitor job labels are Service names; they must equal prometheus.yml's job names."""
    services = resources("Service")
    scraped = {}
    for monitor in resources("ServiceMonitor"):
        targets = [
            s
            for s in services
            if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert len(targets) == 1, monitor["metadata"]["name"]
        port_names = {p["name"] for p in targets[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names
            assert endpoint["path"] == "/metrics"
        scraped[targets[0]["metadata"]["name"]] = monitor["spec"]["endpoints"][0]["port"]
    assert scraped == {"lit-gateway": "http", "lit-triton": "metrics"}
    compose = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert {job["job_name"] for job in compose["scrape_configs"]} == set(scraped)
    alerts = (PROMETHEUS / "alerts.yml").read_text()
    assert set(re.findall(r'job="([^"]+)"', alerts)) == set(scraped)


def test_prometheus_rule_carries_alerts_yml_unchanged():
    alerts = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    assert one("PrometheusRule", "lit")["spec"]["groups"] == alerts["groups"]


# Training ----------------------------------------------------------------------------------------------
def flag(args: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"{name}=")]
    assert len(values) == 1, f"{name} given {len(values)} times in {args}"
    return values[0]


def test_training_job_runs_multi_node_torchrun():
    folder = K8S / "training"
    job = one("Job", "lit-train")
    spec, pod = job["spec"], pod_spec(job)
    c = container(job, "train")
    env, args = env_of(c), c["args"]
    assert c["image"] == "lit-train:latest" and c["command"] == ["torchrun"]
    assert spec["completionMode"] == "Indexed" and pod["restartPolicy"] == "Never"

    # $(VAR) in args expands only from variables the container declares.
    for var in re.findall(r"\$\((\w+)\)", " ".join(args)):
        assert var in env, f"$({var}) is not declared in the container's env"
    index = next(e for e in c["env"] if e["name"] == "JOB_COMPLETION_INDEX")
    assert "job-completion-index" in index["valueFrom"]["fieldRef"]["fieldPath"]

    nodes = int(env["NNODES"])
    assert nodes == spec["completions"] == spec["parallelism"] >= 2
    assert flag(args, "--nnodes") == "$(NNODES)"
    assert flag(args, "--node_rank") == "$(JOB_COMPLETION_INDEX)"
    assert flag(args, "--nproc_per_node") == "$(NPROC_PER_NODE)"
    assert int(env["NPROC_PER_NODE"]) == c["resources"]["limits"]["nvidia.com/gpu"]

    # Rank 0 is pod <job>-0, reachable as <job>-0.<subdomain> through a headless Service selecting the pods.
    service = one("Service", pod["subdomain"])
    assert service["spec"]["clusterIP"] == "None"
    assert selects(service["spec"]["selector"], job["spec"]["template"]["metadata"]["labels"])
    assert flag(args, "--master_addr") == f"{job['metadata']['name']}-0.{pod['subdomain']}"
    port = int(flag(args, "--master_port"))
    assert service_port(service, port) and container_port(job, port) == port

    # torchrun -m training train --config=... : options the CLI really has.
    module_at = args.index("-m")
    assert args[module_at + 1 : module_at + 3] == ["training", "train"]
    import typer.main

    from training.cli import app

    train_options = {opt for p in typer.main.get_command(app).commands["train"].params for opt in p.opts}
    cli_args = args[module_at + 3 :]
    for arg in cli_args:
        assert arg.split("=", 1)[0] in train_options, arg
    assert "--resume" in cli_args, "restarted pods must continue from the latest checkpoint"
    assert flag(cli_args, "--config").endswith(".yaml")
    assert resources("Job", folder) == [job]


def test_training_config_is_valid_and_on_shared_storage(tmp_path):
    from training.config import TrainConfig, load_config

    job = one("Job", "lit-train")
    c = container(job, "train")
    pod = pod_spec(job)
    config_path = Path(flag(c["args"], "--config"))
    mount = next(m for m in c["volumeMounts"] if config_path.is_relative_to(m["mountPath"]))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    config_map = one("ConfigMap", volume["configMap"]["name"])
    text = config_map["data"][str(config_path.relative_to(mount["mountPath"]))]
    (tmp_path / "train.yaml").write_text(text)
    cfg = load_config(TrainConfig, tmp_path / "train.yaml")  # raises naming the key on any bad key

    env = env_of(c)
    world = int(env["NNODES"]) * int(env["NPROC_PER_NODE"])
    assert cfg.batch_size % (world * cfg.accumulation) == 0, "the global batch must split evenly"
    # Rank 0 writes checkpoints and the feature cache; every rank reads them: a shared (RWX) volume.
    shared = {
        m["mountPath"]
        for m in c["volumeMounts"]
        for v in pod["volumes"]
        if v["name"] == m["name"] and "persistentVolumeClaim" in v
    }
    for path in (cfg.out_dir, cfg.cache_dir, Path(cfg.data.path or "")):
        assert any(path.is_relative_to(root) for root in shared), f"{path} is not on the shared volume"
    for volume in (v for v in pod["volumes"] if "persistentVolumeClaim" in v):
        claim = one("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "pods run on different nodes"
