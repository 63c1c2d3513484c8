"""One CUDA major (13) for every GPU piece: the ``gpu`` extra's pins, the GPU image's CUDA base image, the
Triton container of Compose and Kubernetes (and any other NVIDIA CUDA or Triton image the repository names),
and a real install of the ``gpu`` extra (``.venv-gpu``, made by scripts/test.sh) checked by
scripts/check_cuda_major.py. A library built for another CUDA major does not load beside them
(``libcudart.so.12`` is not ``libcudart.so.13``), and the host has one driver for the gateway and Triton.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from packaging.requirements import Requirement

from tests.test_docker_files import parse_dockerfile

ROOT = Path(__file__).resolve().parents[1]
CHECKER = ROOT / "scripts" / "check_cuda_major.py"
GPU_VENV_PYTHON = ROOT / ".venv-gpu" / "bin" / "python"
CUDA_MAJOR = 13

# The CUDA of NVIDIA's Triton containers by `YY.MM-py3` tag (other variants of a release, such as
# `-trtllm-python-py3`, can be built on another CUDA), from "Driver Requirements" in the release notes,
# https://docs.nvidia.com/deeplearning/triton-inference-server/release-notes/rel-YY-MM.html ("Release 25.10
# is based on CUDA 13.0.2.006", ...). A tag missing here fails the test: add it from its release notes.
TRITON_PY3_CUDA = {
    "24.10": "12.6.2",
    "25.03": "12.8.1",
    "25.08": "13.0.0",
    "25.10": "13.0.2",
    "25.12": "13.1.0",
    "26.02": "13.1.1",
    "26.04": "13.2.1",
    "26.06": "13.3.0",
    "26.10": "13.4.3",
}
TRITON_IMAGE = re.compile(r"nvcr\.io/nvidia/tritonserver:([\w.-]+)")
# NVIDIA's CUDA images (Docker Hub nvidia/cuda, NGC nvcr.io/nvidia/cuda): tags start with the CUDA version.
CUDA_IMAGE = re.compile(r"(?<![\w/.-])(?:nvcr\.io/)?nvidia/cuda:([\w.-]+)")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".yml", ".yaml", ".sh", ".txt", ".cfg", ".ini", ".pbtxt"}
SKIP_DIRS = {"tests", "runs", "build", "dist", "node_modules", "__pycache__", "model_repository"}


def _load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_cuda_major", CHECKER)
    assert spec and spec.loader, CHECKER
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


checker = _load_checker()


# ---- The repository's pins and images ----------------------------------------------------------------------


@dataclass(frozen=True)
class Pin:
    """A CUDA-bound value written in a file: where, what, and its CUDA major (None: cannot tell)."""

    file: str
    value: str
    major: int | None


def triton_cuda_major(tag: str) -> int | None:
    cuda = TRITON_PY3_CUDA.get(tag.removesuffix("-py3")) if tag.endswith("-py3") else None
    return int(cuda.split(".")[0]) if cuda else None


def cuda_image_major(tag: str) -> int | None:
    match = re.match(r"(\d+)\.\d+(?:\.\d+)?-", tag)
    return int(match[1]) if match else None


def requirement_major(requirement: str) -> int | None:
    """The CUDA major a requirement of the gpu extra pins, None unless every version it allows has one."""
    req = Requirement(requirement)
    if req.name == "onnxruntime-gpu":
        allowed = [
            f"{major}.{minor}.{patch}"
            for major in (1, 2)
            for minor in range(60)
            for patch in (0, 1, 9)
            if req.specifier.contains(f"{major}.{minor}.{patch}")
        ]
        majors = {checker.onnxruntime_gpu_cuda(version, None) for version in allowed}
        return majors.pop() if len(majors) == 1 else None
    versions = [spec.version for spec in req.specifier] or ["0"]
    majors = {(piece.major if (piece := checker.piece_of(req.name, v)) else None) for v in versions}
    return majors.pop() if len(majors) == 1 else None


def text_files(root: Path) -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS and not d.endswith(".egg-info")
        )
        found += [
            Path(folder) / f for f in files if Path(f).suffix in TEXT_SUFFIXES or f.startswith("Dockerfile")
        ]
    return sorted(found)


def gpu_extra(root: Path = ROOT) -> list[str]:
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]


def cuda_pins(root: Path) -> list[Pin]:
    """Every CUDA-bound value in the repository at ``root``: the gpu extra's requirements, and each NVIDIA
    CUDA or Triton image named in a text file outside tests/ (Dockerfile ARGs, Compose, Kubernetes, docs)."""
    pins = [Pin("pyproject.toml", r, requirement_major(r)) for r in gpu_extra(root)]
    for path in text_files(root):
        text = path.read_text(errors="replace")
        name = str(path.relative_to(root))
        pins += [Pin(name, m[0], triton_cuda_major(m[1])) for m in TRITON_IMAGE.finditer(text)]
        pins += [Pin(name, m[0], cuda_image_major(m[1])) for m in CUDA_IMAGE.finditer(text)]
    return pins


def mismatches(pins: list[Pin], major: int = CUDA_MAJOR) -> list[str]:
    return [
        f"{pin.file}: {pin.value} is CUDA {pin.major}, not CUDA {major}"
        if pin.major is not None
        else f"{pin.file}: cannot tell the CUDA major of {pin.value} (add it to the tables of "
        "tests/test_cuda_major.py or scripts/check_cuda_major.py, from its release notes or wheel)"
        for pin in pins
        if pin.major != major
    ]


def test_every_gpu_piece_of_the_repository_is_cuda_13():
    pins = cuda_pins(ROOT)
    assert not mismatches(pins), "\n".join(mismatches(pins))
    files = {pin.file for pin in pins}
    for expected in [
        "pyproject.toml",
        "Dockerfile",
        "docker-compose.yml",
        "deploy/k8s/triton-deployment.yaml",
    ]:
        assert expected in files, f"no CUDA-bound value found in {expected}: {sorted(files)}"


def test_the_gpu_extra_pins_onnxruntime_gpu_cupy_and_the_nvidia_wheels():
    by_name = {r.name: r for r in map(Requirement, gpu_extra())}
    assert {"cuda", "cudnn"} <= by_name["onnxruntime-gpu"].extras, (
        "onnxruntime-gpu's cuda and cudnn extras bring the CUDA 13 libraries, so no system CUDA is needed"
    )
    assert "cupy-cuda13x" in by_name, f"CuPy for CUDA 13 is missing from the gpu extra: {sorted(by_name)}"
    assert "nvidia-cublas" in by_name, "not in onnxruntime-gpu's extras, but its CUDA provider needs cuBLAS"
    # Every onnxruntime-gpu release the pin allows is one whose wheel was read (and is CUDA 13).
    allowed = [(1, m) for m in range(60) if by_name["onnxruntime-gpu"].specifier.contains(f"1.{m}.0")]
    assert allowed and all(release in checker.ONNXRUNTIME_GPU_CUDA for release in allowed), allowed


def test_the_gpu_jpeg_decoder_pin_is_cuda_13_with_nvjpeg():
    """nvImageCodec (LIT_DECODE_DEVICE=gpu) is built per CUDA major (-cu13); without its nvjpeg extra it has
    no GPU JPEG decoder."""
    (pin,) = [r for r in gpu_extra() if Requirement(r).name == "nvidia-nvimgcodec-cu13"]
    assert requirement_major(pin) == CUDA_MAJOR, pin
    assert "nvjpeg" in Requirement(pin).extras, pin
    assert requirement_major(pin.replace("-cu13", "-cu12")) == 12  # the check can fail


def test_the_gpu_image_builds_on_a_cuda_13_image_and_checks_itself():
    dockerfile = parse_dockerfile(ROOT / "Dockerfile")
    image = dockerfile.global_args["CUDA_IMAGE"]
    assert dockerfile.stage("gpu").base == "${CUDA_IMAGE}"
    match = CUDA_IMAGE.fullmatch(image)
    assert match and cuda_image_major(match[1]) == CUDA_MAJOR, f"Dockerfile: ARG CUDA_IMAGE={image}"
    (install,) = [r.args for r in dockerfile.stage("gateway-builder").all("RUN") if "pip install" in r.args]
    check = install.find('scripts/check_cuda_major.py --onnxruntime "${ONNXRUNTIME}"')
    assert check > install.find("pip install"), f"the gateway build does not run the CUDA check: {install}"


def test_the_pin_check_fails_on_a_repository_with_cuda_12_pieces(tmp_path: Path):
    files = ["pyproject.toml", "Dockerfile", "docker-compose.yml", "deploy/k8s/triton-deployment.yaml"]
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    assert not mismatches(cuda_pins(tmp_path))

    def edit(name: str, old: str, new: str) -> None:
        path = tmp_path / name
        assert old in path.read_text(), f"{name} has no {old}"
        path.write_text(path.read_text().replace(old, new))

    edit("pyproject.toml", '"cupy-cuda13x>=14,<15"', '"cupy-cuda12x>=13"')
    edit("pyproject.toml", "onnxruntime-gpu[cuda,cudnn]>=1.28,<1.32", "onnxruntime-gpu[cuda,cudnn]>=1.17")
    edit("Dockerfile", "nvidia/cuda:13.0.2-base-ubuntu24.04", "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04")
    edit("docker-compose.yml", "tritonserver:25.10-py3", "tritonserver:24.10-py3")
    edit(
        "deploy/k8s/triton-deployment.yaml", "tritonserver:25.10-py3", "tritonserver:25.10-trtllm-python-py3"
    )
    found = "\n".join(mismatches(cuda_pins(tmp_path)))
    for expected in [
        "pyproject.toml: cupy-cuda12x>=13 is CUDA 12",
        "pyproject.toml: cannot tell the CUDA major of onnxruntime-gpu[cuda,cudnn]>=1.17",
        "Dockerfile: nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 is CUDA 12",
        "docker-compose.yml: nvcr.io/nvidia/tritonserver:24.10-py3 is CUDA 12",
        "deploy/k8s/triton-deployment.yaml: cannot tell the CUDA major of "
        "nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3",
    ]:
        assert expected in found, f"expected {expected!r} in:\n{found}"


def test_compose_and_kubernetes_run_a_known_triton_container():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    deployment = yaml.safe_load((ROOT / "deploy/k8s/triton-deployment.yaml").read_text())
    images = {
        "docker-compose.yml": compose["services"]["triton"]["image"],
        "deploy/k8s/triton-deployment.yaml": deployment["spec"]["template"]["spec"]["containers"][0]["image"],
    }
    for file, image in images.items():
        match = TRITON_IMAGE.fullmatch(image)
        assert match and triton_cuda_major(match[1]) == CUDA_MAJOR, f"{file}: {image}"
    assert len(set(images.values())) == 1, f"Compose and Kubernetes run different Tritons: {images}"


# ---- scripts/check_cuda_major.py on made-up environments ------------------------------------------------

CUDA_13 = {
    "onnxruntime-gpu": "1.31.1",
    "cupy-cuda13x": "14.2.0",
    "nvidia-cublas": "13.10.0.20",
    "nvidia-cuda-runtime": "13.5.37",
    "nvidia-cuda-nvrtc": "13.5.37",
    "nvidia-cufft": "12.5.0.14",
    "nvidia-curand": "10.4.5.25",
    "nvidia-nvjitlink": "13.5.37",
    "nvidia_cudnn_cu13": "9.28.1.4",
    "numpy": "2.4.6",
}


def test_checker_accepts_one_cuda_major():
    pieces, problems = checker.check(CUDA_13, "13.0", "13.0.2", onnxruntime="gpu", major=13)
    assert problems == []
    assert {p.major for p in pieces} == {13}
    names = " ".join(p.what for p in pieces)
    for name in ["onnxruntime-gpu 1.31.1 (built for CUDA 13.0)", "nvidia-cudnn-cu13", "nvidia-cufft 12.5"]:
        assert name in names
    assert "numpy" not in names and "nvidia-curand" not in names


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"cupy-cuda13x": None, "cupy-cuda12x": "13.6.0"}, "CUDA 12: cupy-cuda12x 13.6.0"),
        ({"nvidia-cublas-cu12": "12.9.1.4"}, "CUDA 12: nvidia-cublas-cu12"),
        ({"nvidia-cufft": "11.4.1.4"}, "CUDA 12: nvidia-cufft 11.4.1.4"),
        ({"tensorrt-cu12-libs": "10.13.3.9"}, "CUDA 12: tensorrt-cu12-libs"),
        ({"torch": "2.9.1+cu128"}, "CUDA 12: torch 2.9.1+cu128"),
    ],
)
def test_checker_names_a_piece_of_another_cuda_major(change, named):
    dists = {k: v for k, v in {**CUDA_13, **change}.items() if v is not None}
    _, problems = checker.check(dists, "13.0")
    assert len(problems) == 1 and named in problems[0], problems
    assert "CUDA 13: onnxruntime-gpu 1.31.1" in problems[0]


def test_checker_names_the_base_image_and_an_onnxruntime_gpu_for_another_cuda():
    _, problems = checker.check(CUDA_13, "13.0", env_cuda_version="12.6.3")
    assert len(problems) == 1 and "CUDA 12: CUDA_VERSION=12.6.3 (the base image)" in problems[0], problems
    # Without build info, the release table decides: 1.26 was built for CUDA 12.8.
    _, problems = checker.check({**CUDA_13, "onnxruntime-gpu": "1.26.0"})
    assert len(problems) == 1 and "CUDA 12: onnxruntime-gpu 1.26.0 (ONNXRUNTIME_GPU_CUDA)" in problems[0]
    _, problems = checker.check({**CUDA_13, "onnxruntime-gpu": "1.40.0"})
    assert any("onnxruntime-gpu 1.40.0: cannot tell which CUDA" in p for p in problems), problems
    _, problems = checker.check({"cupy-cuda12x": "13.6.0"}, major=13)
    assert problems == ["not built for CUDA 13: cupy-cuda12x 13.6.0: CUDA 12"]


def test_checker_refuses_both_onnxruntimes_and_a_missing_extra():
    _, problems = checker.check({**CUDA_13, "onnxruntime": "1.31.1"}, "13.0")
    assert any("onnxruntime 1.31.1 and onnxruntime-gpu 1.31.1 are both installed" in p for p in problems)
    _, problems = checker.check({"onnxruntime-gpu": "1.31.1"}, "13.0", onnxruntime="gpu")
    assert problems == ["the gpu extra is asked for, but no CuPy (cupy-cudaNNx) is installed"]
    _, problems = checker.check({"onnxruntime": "1.31.1"}, onnxruntime="gpu")
    assert "the gpu extra is asked for, but onnxruntime-gpu is not installed" in problems
    _, problems = checker.check({"onnxruntime-gpu": "1.31.1"}, "13.0", onnxruntime="cpu")
    assert "the cpu extra is asked for, but onnxruntime-gpu is installed instead" in problems
    assert checker.check({"onnxruntime": "1.31.1", "numpy": "2.4.6"}, onnxruntime="cpu") == ([], [])


def test_the_gpu_extra_without_nvidia_wheels_keeps_onnxruntime_gpu_and_cupy():
    requirements = checker.gpu_extra_without_nvidia_wheels(ROOT / "pyproject.toml")
    assert {Requirement(r).name for r in requirements} == {"onnxruntime-gpu", "cupy-cuda13x"}
    assert not any("[" in r or r.startswith("nvidia-") for r in requirements), requirements


# ---- The real gpu extra in .venv-gpu -----------------------------------------------------------------------


def _in_gpu_venv(*args: str, env_cuda_version: str | None = None) -> subprocess.CompletedProcess:
    if not GPU_VENV_PYTHON.exists():
        pytest.skip(".venv-gpu does not exist: `bash scripts/test.sh` creates it (the real gpu extra)")
    env = {k: v for k, v in os.environ.items() if k not in {"CUDA_VERSION", "PYTHONPATH"}}
    if env_cuda_version:
        env["CUDA_VERSION"] = env_cuda_version
    return subprocess.run(
        [str(GPU_VENV_PYTHON), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_installed_gpu_extra_is_cuda_13():
    result = _in_gpu_venv(str(CHECKER), "--onnxruntime", "gpu", "--major", str(CUDA_MAJOR))
    assert result.returncode == 0, result.stdout + result.stderr
    # Read from the installed wheel's build info, not from the release table.
    assert re.search(r"CUDA 13: onnxruntime-gpu [\d.]+ \(built for CUDA 13\.\d+\)", result.stdout), (
        result.stdout
    )
    assert "CUDA 13: cupy-cuda13x" in result.stdout, result.stdout


def test_the_check_of_the_installed_gpu_extra_fails_on_a_cuda_12_base_image():
    result = _in_gpu_venv(str(CHECKER), "--onnxruntime", "gpu", env_cuda_version="12.6.3")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "CUDA 12: CUDA_VERSION=12.6.3 (the base image)" in result.stderr, result.stderr


def test_the_gpu_venv_has_the_pinned_releases_the_gateway_and_the_cuda_provider():
    code = (
        "import importlib.metadata as m, json, onnxruntime, fastapi, service.settings\n"
        "print(json.dumps({'versions': {n: m.version(n) for n in ('onnxruntime-gpu', 'cupy-cuda13x')},\n"
        "  'providers': onnxruntime.get_available_providers(), 'service': service.settings.__file__}))"
    )
    result = _in_gpu_venv("-c", code)
    assert result.returncode == 0, result.stdout + result.stderr
    found = json.loads(result.stdout)
    for requirement in map(Requirement, gpu_extra()):
        if requirement.name in found["versions"]:
            version = found["versions"][requirement.name]
            assert requirement.specifier.contains(version), f".venv-gpu has {requirement.name} {version}"
    assert "CUDAExecutionProvider" in found["providers"], found["providers"]
    # The project is installed editable: the gateway's code is this checkout's.
    assert Path(found["service"]).resolve().is_relative_to(ROOT), found["service"]
