"""The container files: every Dockerfile passes hadolint, docker-compose.yml renders with docker-compose 1.29,
and both say what the deployment needs (no torch in the gateway, non-root users, mounts that exist, one
clear command per stack).

There is no Docker engine on the machines that run these tests: images are built on users' machines, so
the files are checked statically with the real tools and by reading what they render.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from service.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO_ROOT / "Dockerfile"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
HADOLINT = REPO_ROOT / ".venv" / "bin" / "hadolint"
HADOLINT_CONFIG = REPO_ROOT / ".hadolint.yaml"
DOCKER_COMPOSE = REPO_ROOT / ".venv-compose" / "bin" / "docker-compose"

ONNXRUNTIME_EXTRAS = ("cpu", "gpu")
TORCH_PACKAGES = {"torch", "torchvision", "torchaudio"}
SKIP_DIRS = {"runs", "build", "dist", "node_modules", "__pycache__"}


def _tool(path: Path, what: str) -> Path:
    if not os.access(path, os.X_OK):
        pytest.fail(f"{what} is missing at {path.relative_to(REPO_ROOT)}: `bash scripts/test.sh` installs it")
    return path


# ---- A small Dockerfile reader ---------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    path: Path
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise AssertionError(f"{self.path.name} has no stage {name!r}: {[s.name for s in self.stages]}")

    def expand(self, text: str, build_args: dict[str, str]) -> str:
        values = {**self.global_args, **build_args}
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m[1] or m[2], m[0]), text)


def parse_dockerfile(path: Path) -> Dockerfile:
    """Instructions with continuation lines joined and comment lines dropped, grouped by stage."""
    logical: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if line.startswith("#") or (not line and pending):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        if pending.strip():
            logical.append((start, pending.strip()))
        pending = ""

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, text in logical:
        keyword, _, args = text.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name, base=words[0]))
        elif not stages:
            assert keyword == "ARG", f"{path.name}:{number}: only ARG may come before the first FROM"
            arg_name, _, default = args.partition("=")
            global_args[arg_name] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, args, number))
    return Dockerfile(path, global_args, stages)


def _flags(args: str) -> tuple[dict[str, str], list[str]]:
    words = shlex.split(args)
    flags = dict(w[2:].partition("=")[::2] for w in words if w.startswith("--"))
    return flags, [w for w in words if not w.startswith("--")]


def stage_closure(dockerfile: Dockerfile, name: str, build_args: dict[str, str]) -> list[Stage]:
    """The stage, the stages it is built FROM and the stages it COPYs --from, recursively."""
    names = {s.name for s in dockerfile.stages}
    seen: list[Stage] = []
    todo = [name]
    while todo:
        stage = dockerfile.stage(todo.pop())
        if stage in seen:
            continue
        seen.append(stage)
        base = dockerfile.expand(stage.base, build_args)
        todo += [base] if base in names else []
        for copy in stage.all("COPY"):
            source = _flags(copy.args)[0].get("from")
            todo += [source] if source in names else []
    return seen


def effective(dockerfile: Dockerfile, name: str, keyword: str, build_args: dict[str, str]) -> str | None:
    """The last value of an inherited setting (USER, ENTRYPOINT, WORKDIR) along the FROM chain."""
    names = {s.name for s in dockerfile.stages}
    while True:
        stage = dockerfile.stage(name)
        found = stage.all(keyword)
        if found:
            return found[-1].args
        base = dockerfile.expand(stage.base, build_args)
        if base not in names:
            return None
        name = base


def env_of(dockerfile: Dockerfile, name: str, build_args: dict[str, str]) -> dict[str, str]:
    chain = []
    names = {s.name for s in dockerfile.stages}
    while name in names:
        chain.append(dockerfile.stage(name))
        name = dockerfile.expand(chain[-1].base, build_args)
    env: dict[str, str] = {}
    for stage in reversed(chain):
        for instruction in stage.all("ENV"):
            for word in shlex.split(instruction.args):
                key, _, value = word.partition("=")
                env[key] = value
    return env


@dataclass
class PipInstall:
    stage: str
    pip: str
    requirements: list[str]


def pip_installs(stages: list[Stage], dockerfile: Dockerfile, build_args: dict[str, str]) -> list[PipInstall]:
    found = []
    for stage in stages:
        for run in stage.all("RUN"):
            lexer = shlex.shlex(dockerfile.expand(run.args, build_args), posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            segments: list[list[str]] = [[]]
            for word in lexer:
                if word in {"&&", "||", ";", "|"}:
                    segments.append([])
                else:
                    segments[-1].append(word)
            for words in segments:
                at = words.index("install") if "install" in words else 0
                if not at or not re.fullmatch(r"pip[\d.]*", Path(words[at - 1]).name):
                    continue
                rest = words[at + 1 :]
                found.append(
                    PipInstall(stage.name, words[at - 1], [w for w in rest if not w.startswith("-")])
                )
    return found


def project_extras(requirement: str) -> set[str] | None:
    """The extras of an install of the project's source tree (`.[a,b]`), None for any other requirement."""
    match = re.fullmatch(r"(\.|/[\w./-]*)\[([\w,\s-]+)\]", requirement)
    return {e.strip() for e in match[2].split(",")} if match else None


def requirement_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0].lower().replace("_", "-")


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    assert DOCKERFILE.is_file(), "the gateway's Dockerfile belongs at the repository root"
    return parse_dockerfile(DOCKERFILE)


def all_dockerfiles() -> list[Path]:
    found = []
    for root, dirs, files in os.walk(REPO_ROOT):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
        for name in files:
            if name == "Dockerfile" or name.startswith("Dockerfile.") or name.lower().endswith(".dockerfile"):
                found.append(Path(root) / name)
    return sorted(found)


# ---- hadolint ---------------------------------------------------------------------------------------------


def _hadolint(*paths: Path) -> subprocess.CompletedProcess:
    config = ["--config", str(HADOLINT_CONFIG)] if HADOLINT_CONFIG.exists() else []
    command = [str(_tool(HADOLINT, "hadolint")), "--no-color", "--failure-threshold", "style", *config]
    return subprocess.run(
        [*command, *map(str, paths)], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT
    )


def test_every_dockerfile_passes_hadolint_without_any_finding():
    dockerfiles = all_dockerfiles()
    assert DOCKERFILE in dockerfiles
    result = _hadolint(*dockerfiles)
    names = [str(p.relative_to(REPO_ROOT)) for p in dockerfiles]
    assert result.returncode == 0, f"hadolint on {names}:\n{result.stdout}{result.stderr}"


def test_hadolint_reports_what_it_should(tmp_path: Path):
    """The check above can fail: the same command rejects an untagged base image and unpinned packages."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\n")
    result = _hadolint(bad)
    assert result.returncode != 0
    assert "DL3006" in result.stdout and "DL3013" in result.stdout, result.stdout


def test_hadolint_ignores_are_in_its_config_with_a_reason():
    for path in all_dockerfiles():
        inline = [line for line in path.read_text().splitlines() if re.search(r"#\s*hadolint\s+ignore", line)]
        assert not inline, f"{path.name}: ignore rules in .hadolint.yaml, with the reason: {inline}"
    if not HADOLINT_CONFIG.exists():
        return
    lines = HADOLINT_CONFIG.read_text().splitlines()
    config = yaml.safe_load("\n".join(lines)) or {}
    for rule in config.get("ignored", []):
        at = [n for n, text in enumerate(lines) if re.search(rf"\b{rule}\b", text.split("#")[0])]
        assert at, f".hadolint.yaml: cannot find the line that ignores {rule}"
        reason = [text for text in lines[max(0, at[0] - 3) : at[0] + 1] if "#" in text]
        assert reason, f".hadolint.yaml ignores {rule} without a comment that says why"


# ---- The Dockerfile ---------------------------------------------------------------------------------------


def test_build_targets_and_default(dockerfile: Dockerfile):
    names = [s.name for s in dockerfile.stages]
    assert {"gateway", "train"} <= set(names)
    assert names[-1] == "gateway", "a plain `docker build .` should give the gateway image"
    assert dockerfile.global_args.get("ONNXRUNTIME") == "cpu"


def test_base_images_are_pinned_by_tag(dockerfile: Dockerfile):
    names = {s.name for s in dockerfile.stages}
    for ort in ONNXRUNTIME_EXTRAS:
        for stage in dockerfile.stages:
            image = dockerfile.expand(stage.base, {"ONNXRUNTIME": ort})
            if image in names or image == "scratch":
                continue
            assert "$" not in image, f"stage {stage.name}: {stage.base} does not resolve"
            repository, _, tag = image.partition("@")[0].rpartition(":")
            assert "@sha256:" in image or (repository and tag != "latest" and "/" not in tag), (
                f"stage {stage.name}: base image {image!r} is not pinned by tag"
            )


@pytest.mark.parametrize("ort", ONNXRUNTIME_EXTRAS)
def test_gateway_installs_serve_triton_and_exactly_one_onnxruntime_and_no_torch(dockerfile: Dockerfile, ort):
    args = {"ONNXRUNTIME": ort}
    installs = pip_installs(stage_closure(dockerfile, "gateway", args), dockerfile, args)
    assert installs, "the gateway image installs nothing with pip"
    extras = set()
    for install in installs:
        for requirement in install.requirements:
            project = project_extras(requirement)
            if project is None:
                assert requirement_name(requirement) not in TORCH_PACKAGES, f"{install.stage}: {requirement}"
            else:
                extras |= project
    assert extras == {"serve", "triton", ort}, f"ONNXRUNTIME={ort}: the gateway installs the extras {extras}"

    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = pyproject["dependencies"] + [
        r for extra in extras for r in pyproject["optional-dependencies"][extra]
    ]
    pulled = {requirement_name(r) for r in requirements} & TORCH_PACKAGES
    assert not pulled, f"ONNXRUNTIME={ort}: pyproject.toml makes the gateway extras pull {pulled}"


def test_train_image_installs_train_and_cpu_and_has_torchrun(dockerfile: Dockerfile):
    installs = pip_installs(stage_closure(dockerfile, "train", {}), dockerfile, {})
    extras = set().union(*(project_extras(r) or set() for i in installs for r in i.requirements))
    assert extras == {"train", "cpu"}
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert "torch" in {requirement_name(r) for r in pyproject["optional-dependencies"]["train"]}
    # torchrun is a console script of torch: it lands in the bin folder of the venv pip installed into.
    venv_bins = {str(Path(i.pip).parent) for i in installs}
    path = env_of(dockerfile, "train", {}).get("PATH", "")
    assert venv_bins & set(path.split(":")), f"PATH={path!r} misses {venv_bins}: torchrun would not be found"
    assert effective(dockerfile, "train", "ENTRYPOINT", {}) == '["lit-train"]'


@pytest.mark.parametrize("target", ["gateway", "train"])
@pytest.mark.parametrize("ort", ONNXRUNTIME_EXTRAS)
def test_images_run_as_a_numeric_non_root_user(dockerfile: Dockerfile, target, ort):
    user = effective(dockerfile, target, "USER", {"ONNXRUNTIME": ort})
    assert user is not None, f"{target} runs as root: it sets no USER"
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{target}: USER {user} (numeric, so runAsNonRoot can verify it)"


@pytest.mark.parametrize("ort", ONNXRUNTIME_EXTRAS)
def test_gateway_runtime_settings(dockerfile: Dockerfile, ort):
    args = {"ONNXRUNTIME": ort}
    gateway = dockerfile.stage("gateway")
    env = env_of(dockerfile, "gateway", args)
    assert env["LIT_HOST"] == "0.0.0.0"
    assert env["LIT_REPOSITORY"] == "/models"
    assert env["LIT_LABEL_STORE"].startswith("/data/")
    assert {key[4:].lower() for key in env if key.startswith("LIT_")} <= set(Settings.model_fields)
    assert effective(dockerfile, "gateway", "ENTRYPOINT", args) == '["lit-serve"]'
    assert [i.args for i in gateway.all("EXPOSE")] == ["8000"]
    assert any("/data" in i.args for i in gateway.all("VOLUME")), "label sets need a volume at /data"
    (healthcheck,) = gateway.all("HEALTHCHECK")
    assert re.search(r"urllib.*127\.0\.0\.1.*/(healthz|readyz)", healthcheck.args), healthcheck.args
    # The committed model repository is baked in at /models (a volume can replace it).
    copies = [_flags(c.args)[1] for s in stage_closure(dockerfile, "gateway", args) for c in s.all("COPY")]
    assert ["model_repository", "/models"] in copies


def test_build_context_lets_in_what_the_dockerfiles_copy_and_nothing_heavy(dockerfile: Dockerfile):
    patterns = _dockerignore_patterns()
    sources = set()
    for path in all_dockerfiles():
        for stage in parse_dockerfile(path).stages:
            for copy in stage.all("COPY") + stage.all("ADD"):
                flags, words = _flags(copy.args)
                if "from" not in flags:
                    sources |= set(words[:-1])
    assert sources, "no COPY from the build context found"
    for source in sorted(sources):
        assert (REPO_ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert _in_context(source, patterns), f".dockerignore leaves out {source}, which a Dockerfile copies"
        if (REPO_ROOT / source).is_dir():
            assert _in_context(f"{source}/x.py", patterns)
    for heavy in [".git/HEAD", ".venv/bin/python", ".venv-compose/bin/python", "runs/demo/lit/model.pt",
                  "tests/test_x.py", "service/__pycache__/app.cpython-311.pyc", "lit_zeroshot.egg-info/PKG",
                  ".pytest_cache/v", "model_repository/lit_demo_image/.staging-abc/model.onnx"]:  # fmt: skip
        assert not _in_context(heavy, patterns), f".dockerignore lets {heavy} into the build context"


def _dockerignore_patterns() -> list[tuple[bool, re.Pattern]]:
    path = REPO_ROOT / ".dockerignore"
    assert path.is_file(), ".dockerignore keeps venvs, runs/ and .git out of the build context"
    patterns = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        glob = line.lstrip("!").strip("/")
        regex = ""
        for part in re.split(r"(\*\*/?|\*|\?|\[[^\]]*\])", glob):
            if part.startswith("**"):
                regex += "(?:.*/)?" if part.endswith("/") else ".*"
            elif part == "*":
                regex += "[^/]*"
            elif part == "?":
                regex += "[^/]"
            elif part.startswith("["):
                regex += part
            else:
                regex += re.escape(part)
        patterns.append((negate, re.compile(regex)))
    return patterns


def _in_context(path: str, patterns: list[tuple[bool, re.Pattern]]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent folders decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for negate, pattern in patterns:
        if any(pattern.fullmatch(c) for c in candidates):
            included = negate
    return included


# ---- docker-compose.yml -----------------------------------------------------------------------------------


def _compose(*args: str) -> subprocess.CompletedProcess:
    compose = _tool(DOCKER_COMPOSE, "docker-compose 1.29 (in .venv-compose)")
    # Only the defaults written in the file: no variables from the caller's shell.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [str(compose), "-f", str(COMPOSE_FILE), *args],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, env=env,
    )  # fmt: skip


@pytest.fixture(scope="module")
def compose() -> dict:
    assert COMPOSE_FILE.is_file()
    rendered = {}
    for profile in ["", "gpu", "embedded"]:
        result = _compose(*(["--profile", profile] if profile else []), "config")
        assert result.returncode == 0, f"docker-compose config --profile {profile!r}:\n{result.stderr}"
        rendered[profile] = yaml.safe_load(result.stdout)
    assert rendered["gpu"] == rendered["embedded"] == rendered[""]
    return rendered[""]


def started(config: dict, *profiles: str) -> set[str]:
    """What `docker-compose --profile P up` starts: services without profiles always, others when enabled."""
    return {
        name
        for name, service in config["services"].items()
        if not service.get("profiles") or set(service["profiles"]) & set(profiles)
    }


def bind_mounts(service: dict) -> list[tuple[Path, str, bool]]:
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append((Path(volume["source"]), volume["target"], bool(volume.get("read_only"))))
            continue
        source, target, *mode = volume.split(":")
        if source.startswith(("/", ".")):
            mounts.append((Path(source), target, "ro" in (mode[0].split(",") if mode else [])))
    return mounts


def test_each_stack_is_one_profile(compose: dict):
    assert set(compose["services"]) == {"triton", "gateway", "gateway-embedded", "prometheus", "grafana"}
    assert started(compose) == set(), "a plain `up` should start neither stack"
    assert started(compose, "gpu") == {"triton", "gateway", "prometheus", "grafana"}
    assert started(compose, "embedded") == {"gateway-embedded"}
    header = COMPOSE_FILE.read_text().split("\nservices:")[0]
    assert "docker-compose --profile gpu up" in header and "docker-compose --profile embedded up" in header


def host_port(port: dict | str) -> tuple[str, int]:
    """(host address, host port) of a rendered `ports` entry; 0.0.0.0 when bound to every address."""
    if isinstance(port, dict):
        return port.get("host_ip", "0.0.0.0"), int(port["published"])
    *host, _container = port.split("/")[0].split(":")
    return (host[0] if len(host) == 2 else "0.0.0.0"), int(host[-1])


@pytest.mark.parametrize("profile", ["gpu", "embedded"])
def test_a_stack_depends_only_on_its_own_services_and_its_ports_do_not_clash(compose: dict, profile):
    services = started(compose, profile)
    taken: list[tuple[str, int, str]] = []
    for name in sorted(services):
        service = compose["services"][name]
        missing = set(service.get("depends_on", {})) - services
        assert not missing, f"--profile {profile}: {name} depends on {missing}, which do not start"
        for address, port in map(host_port, service.get("ports", [])):
            for other_address, other_port, other in taken:
                same_address = address == other_address or "0.0.0.0" in (address, other_address)
                assert not (same_address and port == other_port), (
                    f"--profile {profile}: {name} and {other} both publish host port {port}"
                )
            taken.append((address, port, name))


def test_gateways(compose: dict):
    services = compose["services"]
    gateway, embedded = services["gateway"], services["gateway-embedded"]
    for service in (gateway, embedded):
        assert service["build"]["target"] == "gateway"
        assert Path(service["build"]["context"]) == REPO_ROOT
        assert service["build"].get("args", {}).get("ONNXRUNTIME", "cpu") in ONNXRUNTIME_EXTRAS
        assert service["image"] == "lit-gateway:latest"
        assert (REPO_ROOT / "model_repository", "/models", True) in bind_mounts(service)
        assert any(
            isinstance(v, str) and v.split(":")[0] in compose["volumes"] and v.split(":")[1] == "/data"
            for v in service["volumes"]
        ), "label sets need a named volume at /data"
        assert "/readyz" in " ".join(service["healthcheck"]["test"]) or "/healthz" in " ".join(
            service["healthcheck"]["test"]
        )
        assert {"published": 8000, "target": 8000} in service["ports"]
    assert gateway["environment"]["LIT_BACKEND"] == "triton"
    assert gateway["environment"]["LIT_TRITON_URL"] == "triton:8001"
    assert "triton" in gateway["depends_on"]
    assert embedded["environment"]["LIT_BACKEND"] == "onnxruntime"


@pytest.mark.parametrize("name", ["gateway", "gateway-embedded"])
def test_gateway_environment_is_valid_settings(compose: dict, monkeypatch, name):
    environment = compose["services"][name]["environment"]
    for key in list(os.environ):
        if key.startswith("LIT_"):
            monkeypatch.delenv(key)
    for key, value in environment.items():
        assert key.startswith("LIT_") and key[4:].lower() in Settings.model_fields, f"{name}: unknown {key}"
        monkeypatch.setenv(key, str(value))
    settings = Settings()
    assert str(settings.repository) == "/models"
    assert settings.host == "0.0.0.0"


def test_triton(compose: dict):
    triton = compose["services"]["triton"]
    assert triton["image"] == "nvcr.io/nvidia/tritonserver:25.10-py3"
    assert "--model-repository=/models" in triton["command"]
    assert (REPO_ROOT / "model_repository", "/models", True) in bind_mounts(triton)
    (device,) = triton["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["count"] == 1 and device["capabilities"] == ["gpu"]
    assert "shm_size" in triton
    targets = {int(p.split(":")[-1].split("/")[0]) for p in triton["ports"] if isinstance(p, str)}
    assert {8001, 8002} <= targets


def test_every_bind_mount_exists_in_the_repository(compose: dict):
    mounts = {name: bind_mounts(service) for name, service in compose["services"].items()}
    for name, service_mounts in mounts.items():
        for source, target, read_only in service_mounts:
            assert source.is_relative_to(REPO_ROOT), f"{name}: {source} is outside the repository"
            assert source.exists(), (
                f"{name}: {source.relative_to(REPO_ROOT)} (mounted at {target}) is missing"
            )
            assert read_only, f"{name}: {source.relative_to(REPO_ROOT)} should be mounted read-only"
    prometheus = {(s.relative_to(REPO_ROOT).as_posix(), t) for s, t, _ in mounts["prometheus"]}
    assert prometheus == {
        ("deploy/prometheus/prometheus.yml", "/etc/prometheus/prometheus.yml"),
        ("deploy/prometheus/alerts.yml", "/etc/prometheus/alerts.yml"),
    }
    grafana = {(s.relative_to(REPO_ROOT).as_posix(), t) for s, t, _ in mounts["grafana"]}
    assert grafana == {
        ("deploy/grafana/provisioning", "/etc/grafana/provisioning"),
        ("deploy/grafana/dashboards", "/var/lib/grafana/dashboards"),
    }
    # Files that Grafana is told to open exist behind those mounts.
    home = compose["services"]["grafana"]["environment"].get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        (source,) = [s for s, t, _ in mounts["grafana"] if home.startswith(t + "/")]
        assert (source / Path(home).name).is_file(), f"GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH={home}"


def test_prometheus_scrapes_services_of_the_gpu_stack(compose: dict):
    scrape = yaml.safe_load((REPO_ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = [
        t for job in scrape["scrape_configs"] for c in job.get("static_configs", []) for t in c["targets"]
    ]
    gpu_stack = started(compose, "gpu")
    for target in targets:
        host, port = target.rsplit(":", 1)
        assert host in gpu_stack, f"prometheus.yml scrapes {target}, but the GPU stack has no service {host}"
        service = compose["services"][host]
        listening = {str(service.get("environment", {}).get("LIT_PORT", ""))}
        listening |= {str(p["target"]) if isinstance(p, dict) else p.split(":")[-1].split("/")[0]
                      for p in service.get("ports", [])}  # fmt: skip
        assert port in listening, f"prometheus.yml scrapes {target}, but {host} listens on {listening}"
    assert {t.split(":")[0] for t in targets} >= {"gateway", "triton"}


def test_third_party_images_are_pinned(compose: dict):
    for name, service in compose["services"].items():
        if "build" in service:
            continue
        tag = service["image"].rpartition(":")[2]
        assert "/" not in tag and tag not in {"", "latest"}, (
            f"{name}: {service['image']} is not pinned by tag"
        )
