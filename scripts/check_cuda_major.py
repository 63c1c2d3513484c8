#!/usr/bin/env python3
"""Check that the CUDA pieces installed in a Python environment are all built for one CUDA major.

Run it with that environment's own interpreter: it reads the installed distributions, needs no GPU and
nothing beyond the standard library (it runs in the GPU image's build, on Ubuntu's Python 3.12):

    .venv-gpu/bin/python scripts/check_cuda_major.py --onnxruntime gpu

What it reads:

- onnxruntime-gpu: ``cuda_version`` in its ``onnxruntime/capi/build_and_package_info.py``, read as text (the
  package itself is not imported); failing that, ``ONNXRUNTIME_GPU_CUDA`` below;
- CuPy: the distribution name ``cupy-cudaNNx``;
- NVIDIA's wheels: ``nvidia-*-cuNN`` (all of CUDA 12's, cuDNN's and NCCL's), and CUDA 13's unsuffixed ones
  through their version (``NVIDIA_UNSUFFIXED``); likewise ``tensorrt-cuNN*``, ``cuda-toolkit`` and a torch
  built for CUDA (``2.11.0+cu130``);
- ``CUDA_VERSION``, which NVIDIA's CUDA base images set.

Exit status 0 when they agree; 1, naming every piece of each major, when they do not, when onnxruntime and
onnxruntime-gpu (the same module) are both installed, or when ``--onnxruntime`` names an extra whose
packages are missing. ``--gpu-extra-without-nvidia-wheels PYPROJECT`` prints the ``gpu`` extra's
requirements without NVIDIA's runtime wheels instead, one a line (scripts/test.sh installs them).
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

# The CUDA that onnxruntime-gpu's wheels on PyPI were built for, by (major, minor) release: ``cuda_version``
# in each wheel's onnxruntime/capi/build_and_package_info.py, read from the wheels on PyPI in 2026-12
# (1.24.4, 1.25.1, 1.26.0: "12.8"; 1.27.0, 1.28.0, 1.29.0, 1.30.0, 1.31.0, 1.31.1: "13.0"). Used when an
# installed onnxruntime-gpu has no readable build info, and by tests/test_cuda_major.py to check the pin in
# pyproject.toml. A newer release needs its wheel read before it goes in here.
ONNXRUNTIME_GPU_CUDA: dict[tuple[int, int], int] = {
    (1, 24): 12,
    (1, 25): 12,
    (1, 26): 12,
    (1, 27): 13,
    (1, 28): 13,
    (1, 29): 13,
    (1, 30): 13,
    (1, 31): 13,
}

# CUDA 13's NVIDIA wheels dropped the -cuNN suffix (nvidia-cuda-runtime, nvidia-cublas, ...). Their version
# major is the CUDA major plus this offset: cuFFT 12 ships with CUDA 13 (cuFFT 11 with CUDA 12). Source:
# onnxruntime-gpu 1.31.1's `cuda` extra (nvidia-cuda-runtime~=13.0, nvidia-cuda-nvrtc~=13.0,
# nvidia-cufft~=12.0) and ONNX Runtime's own _get_cufft_version; nvidia-cublas and nvidia-nvjitlink are
# 13.x on PyPI. cuRAND is left out: it is 10.x for both CUDA 12 and 13.
NVIDIA_UNSUFFIXED: dict[str, int] = {
    "nvidia-cuda-runtime": 0,
    "nvidia-cuda-nvrtc": 0,
    "nvidia-cublas": 0,
    "nvidia-nvjitlink": 0,
    "nvidia-cufft": -1,
}

BUILD_INFO = "onnxruntime/capi/build_and_package_info.py"


@dataclass(frozen=True)
class Piece:
    """One installed thing that is built for a CUDA major: what it is (as shown to people) and the major."""

    what: str
    major: int


def normalize(name: str) -> str:
    """A distribution name as PyPI compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _major(version: str) -> int | None:
    match = re.match(r"\d+", version)
    return int(match[0]) if match else None


def onnxruntime_gpu_cuda(version: str, build_cuda_version: str | None) -> int | None:
    """The CUDA major onnxruntime-gpu ``version`` was built for: from its build info, else the table."""
    if build_cuda_version:
        return _major(build_cuda_version)
    numbers = [int(n) for n in re.findall(r"\d+", version)[:2]]
    return ONNXRUNTIME_GPU_CUDA.get((numbers[0], numbers[1])) if len(numbers) == 2 else None


def piece_of(name: str, version: str) -> Piece | None:
    """The CUDA major a distribution (other than onnxruntime-gpu) says it is built for, if it says one."""
    name = normalize(name)
    what = f"{name} {version}"
    if match := re.fullmatch(r"cupy-cuda(\d+)(x?)", name):
        digits = match[1]
        return Piece(what, int(digits if match[2] else digits[:-1]))  # cupy-cuda117 was CUDA 11.7
    if name.startswith(("nvidia-", "tensorrt")) and (match := re.search(r"-cu(\d+)(?:-|$)", name)):
        return Piece(what, int(match[1]))
    if name in NVIDIA_UNSUFFIXED and (major := _major(version)) is not None:
        return Piece(what, major - NVIDIA_UNSUFFIXED[name])
    if name == "cuda-toolkit" and (major := _major(version)) is not None:
        return Piece(what, major)
    if name == "torch" and (match := re.search(r"\+cu(\d+)\d$", version)):
        return Piece(what, int(match[1]))  # +cu130: CUDA 13.0
    return None


def check(
    distributions: Mapping[str, str],
    build_cuda_version: str | None = None,
    env_cuda_version: str | None = None,
    onnxruntime: str | None = None,
    major: int | None = None,
) -> tuple[list[Piece], list[str]]:
    """The CUDA pieces among ``distributions`` (name -> version) and the problems with them.

    ``build_cuda_version`` is onnxruntime-gpu's ``cuda_version``, ``env_cuda_version`` the CUDA_VERSION
    variable; ``onnxruntime`` (``cpu`` or ``gpu``) the project's ONNX Runtime extra, whose packages must be
    there; ``major`` the CUDA major every piece must have (by default they need only agree)."""
    dists = {normalize(name): version for name, version in distributions.items()}
    pieces: list[Piece] = []
    problems: list[str] = []
    if "onnxruntime" in dists and "onnxruntime-gpu" in dists:
        problems.append(
            f"onnxruntime {dists['onnxruntime']} and onnxruntime-gpu {dists['onnxruntime-gpu']} are both "
            "installed: they provide the same module, so one overwrites the other; keep exactly one"
        )
    if onnxruntime == "gpu":
        if "onnxruntime-gpu" not in dists:
            problems.append("the gpu extra is asked for, but onnxruntime-gpu is not installed")
        if not any(re.fullmatch(r"cupy-cuda\d+x?", name) for name in dists):
            problems.append("the gpu extra is asked for, but no CuPy (cupy-cudaNNx) is installed")
    elif onnxruntime == "cpu":
        if "onnxruntime" not in dists:
            problems.append("the cpu extra is asked for, but onnxruntime is not installed")
        if "onnxruntime-gpu" in dists and "onnxruntime" not in dists:
            problems.append("the cpu extra is asked for, but onnxruntime-gpu is installed instead")

    if "onnxruntime-gpu" in dists:
        version = dists["onnxruntime-gpu"]
        found = onnxruntime_gpu_cuda(version, build_cuda_version)
        if found is None:
            problems.append(
                f"onnxruntime-gpu {version}: cannot tell which CUDA it was built for (no cuda_version in "
                f"{BUILD_INFO}, and not in ONNXRUNTIME_GPU_CUDA of scripts/check_cuda_major.py)"
            )
        else:
            built = f"built for CUDA {build_cuda_version}" if build_cuda_version else "ONNXRUNTIME_GPU_CUDA"
            pieces.append(Piece(f"onnxruntime-gpu {version} ({built})", found))
    for name, version in sorted(dists.items()):
        if name != "onnxruntime-gpu" and (piece := piece_of(name, version)):
            pieces.append(piece)
    if env_cuda_version and (found := _major(env_cuda_version)) is not None:
        pieces.append(Piece(f"CUDA_VERSION={env_cuda_version} (the base image)", found))

    majors = sorted({p.major for p in pieces})
    if major is not None:
        wrong = [p for p in pieces if p.major != major]
        if wrong:
            problems.append(
                f"not built for CUDA {major}: " + "; ".join(f"{p.what}: CUDA {p.major}" for p in wrong)
            )
    elif len(majors) > 1:
        groups = "; ".join(f"CUDA {m}: " + ", ".join(p.what for p in pieces if p.major == m) for m in majors)
        problems.append(f"the CUDA pieces disagree on the CUDA major ({groups})")
    return pieces, problems


def installed() -> dict[str, str]:
    """Name -> version of every distribution this interpreter sees."""
    return {normalize(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}


def installed_build_cuda_version() -> str | None:
    """onnxruntime-gpu's ``cuda_version``, read from its build-info module without importing onnxruntime."""
    try:
        dist = metadata.distribution("onnxruntime-gpu")
    except metadata.PackageNotFoundError:
        return None
    for file in dist.files or []:
        if str(file).replace("\\", "/").endswith(BUILD_INFO):
            source = Path(str(dist.locate_file(file))).read_text()
            for node in ast.parse(source).body:
                if (
                    isinstance(node, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "cuda_version" for t in node.targets)
                    and isinstance(node.value, ast.Constant)
                    and isinstance(node.value.value, str)
                ):
                    return node.value.value or None
    return None


def gpu_extra_without_nvidia_wheels(pyproject: Path) -> list[str]:
    """The ``gpu`` extra's requirements without NVIDIA's runtime wheels: no ``nvidia-*`` requirement, and no
    extras on the others (onnxruntime-gpu's ``cuda`` and ``cudnn`` extras are those wheels)."""
    extra = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]["gpu"]
    kept = []
    for requirement in extra:
        name = normalize(re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0])
        if not name.startswith("nvidia-"):
            kept.append(re.sub(r"\[[^\]]*\]", "", requirement).replace(" ", ""))
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnxruntime", choices=["cpu", "gpu"], help="the ONNX Runtime extra installed")
    parser.add_argument("--major", type=int, help="the CUDA major every piece must be built for")
    parser.add_argument(
        "--gpu-extra-without-nvidia-wheels",
        type=Path,
        metavar="PYPROJECT",
        help="print the gpu extra's requirements without NVIDIA's runtime wheels, one a line, and exit",
    )
    args = parser.parse_args(argv)
    if args.gpu_extra_without_nvidia_wheels:
        print("\n".join(gpu_extra_without_nvidia_wheels(args.gpu_extra_without_nvidia_wheels)))
        return 0

    pieces, problems = check(
        installed(),
        build_cuda_version=installed_build_cuda_version(),
        env_cuda_version=os.environ.get("CUDA_VERSION"),
        onnxruntime=args.onnxruntime,
        major=args.major,
    )
    for piece in pieces:
        print(f"CUDA {piece.major}: {piece.what}")
    if not pieces:
        print("no CUDA pieces installed")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
