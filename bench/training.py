"""Benchmark: LiT training steps/s with the locked-feature cache, without it, and open_clip --lock-image.

All runs use the project's own ``training.train.train`` (or open_clip's own ``open_clip_train.main``) on the
same towers: a locked, randomly initialised timm ``vit_base_patch16_224`` image tower with a linear image
head, and a small from-scratch text transformer (4 layers, width 256), batch 16, fp32, synthetic data at
224 px. Step times are taken from outside the loops, from a global optimiser-step hook (the time between
two ``optimizer.step()`` calls is one whole step: data, forward, backward, update); the first steps of each
run are warm-up and are not counted. The one-off cost of building the cache is the time the first cached
run spends in ``FeatureCache.build``; a second, identical run finds the cache by its key and reuses it.

open_clip runs in a virtual environment of its own, ``bench/.cache/openclip-venv`` (``--setup-openclip``
creates it: ``open_clip_torch`` from PyPI, with the project environment's torch and timm reached through a
``.pth`` file, so both sides run the same torch). Without it the open_clip row says so.

Run: ``.venv/bin/python -m bench.training [--tiny] [--out DIR] [--setup-openclip]``.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any
from unittest import mock

import torch
import typer
from torch.optim.optimizer import register_optimizer_step_post_hook

from bench.report import RESULTS, Table, write_result

OPENCLIP_VENV = Path(__file__).resolve().parent / ".cache" / "openclip-venv"
OPENCLIP_VERSION = "3.3.0"
OPENCLIP_RUN = "open_clip --lock-image (no cache)"
TARGET = 3.0  # the feature cache at least 3x the uncached run's steps/s


@dataclass(frozen=True)
class Sizes:
    image_tower: str
    image_size: int
    batch: int
    dataset: int  # images in the training set: what building the cache runs the tower over
    text_width: int = 256
    text_layers: int = 4
    text_heads: int = 4
    context_length: int = 16
    embed_dim: int = 256
    uncached: tuple[int, int] = (1, 5)  # (warm-up steps, measured steps)
    cached: tuple[int, int] = (10, 100)
    openclip: tuple[int, int] = (1, 5)


FULL = Sizes("vit_base_patch16_224", image_size=224, batch=16, dataset=128)
TINY = Sizes(
    "vit_tiny_patch16_224",
    image_size=224,
    batch=8,
    dataset=32,
    text_width=64,
    text_layers=2,
    embed_dim=64,
    uncached=(1, 3),
    cached=(3, 20),
    openclip=(1, 3),
)


@dataclass
class Run:
    name: str
    warmup: int
    steps: list[float] = field(default_factory=list)  # measured step durations (s), warm-up excluded
    wall_s: float = 0.0  # the whole call: building towers, (cache), all steps, final checkpoint
    cache_build_s: float | None = None
    note: str = ""

    @property
    def ran(self) -> bool:
        return bool(self.steps)

    @property
    def s_per_step(self) -> float:
        return sum(self.steps) / len(self.steps)

    @property
    def steps_per_s(self) -> float:
        return 1.0 / self.s_per_step

    def figures(self) -> dict[str, Any]:
        out = asdict(self)
        if self.ran:
            out |= {"s_per_step": self.s_per_step, "steps_per_s": self.steps_per_s}
            out["median_s_per_step"] = statistics.median(self.steps)
        return out


class StepClock:
    """Records the time after every ``optimizer.step()`` of any optimiser (torch's global hook)."""

    def __init__(self, device: str) -> None:
        self.sync = device.startswith("cuda")
        self.times: list[float] = []

    def __enter__(self) -> StepClock:
        self.handle = register_optimizer_step_post_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()

    def _hook(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self.sync:
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())


def steady_steps(times: list[float], warmup: int) -> list[float]:
    """Durations of the steps after the first ``warmup`` ones, from post-step timestamps."""
    if warmup < 1:
        raise ValueError("at least one warm-up step is needed to time the first measured step")
    return [b - a for a, b in zip(times[warmup - 1 :], times[warmup:], strict=False)]


# ---------------------------------------------------------------------------------------------------
# The project's own training loop


def lit_config(sizes: Sizes, work: Path, name: str, feature_cache: bool, steps: int):
    from training.config import TrainConfig

    return TrainConfig.model_validate(
        {
            "out_dir": work / name,
            "seed": 0,
            "steps": steps,
            "batch_size": sizes.batch,
            "precision": "fp32",
            "checkpoint_every": 0,
            "log_every": 1000,
            "feature_cache": feature_cache,
            "cache_dir": work / "feature-cache",
            "model": {
                "mode": "Lu",
                "embed_dim": sizes.embed_dim,
                "image_head": True,
                "image": {"kind": "timm", "name": sizes.image_tower, "pretrained": False},
                "text": {
                    "kind": "scratch",
                    "context_length": sizes.context_length,
                    "width": sizes.text_width,
                    "layers": sizes.text_layers,
                    "heads": sizes.text_heads,
                    "vocab_size": 1000,
                },
            },
            "data": {
                "kind": "synthetic",
                "workers": 0,
                "synthetic": {"image_size": sizes.image_size, "train_size": sizes.dataset, "eval_size": 8},
            },
            "optim": {"warmup_steps": 10},
        }
    )


@contextlib.contextmanager
def on_device(device: str) -> Iterator[None]:
    """``train()`` picks CUDA whenever it is available (there is no device setting); pin it to ``device``."""
    import training.distributed as dist

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but torch sees no CUDA device here")
    if dist.init_distributed().device.type == torch.device(device).type:
        yield
        return
    with mock.patch.object(dist, "init_distributed", lambda: dist.DistInfo(device=torch.device(device))):
        yield


@contextlib.contextmanager
def timed_cache_build() -> Iterator[list[float]]:
    """Seconds spent in ``FeatureCache.build`` (running the locked tower over the data, writing shards)."""
    from training.feature_cache import FeatureCache

    spent: list[float] = []
    build = FeatureCache.build

    def timed(self: FeatureCache, *args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return build(self, *args, **kwargs)
        finally:
            spent.append(time.perf_counter() - began)

    with mock.patch.object(FeatureCache, "build", timed):
        yield spent


def run_lit(
    sizes: Sizes, work: Path, name: str, feature_cache: bool, warmup: int, measured: int, device: str
) -> Run:
    from training.train import train

    cfg = lit_config(sizes, work, name, feature_cache, warmup + measured)
    with on_device(device), StepClock(device) as clock, timed_cache_build() as builds:
        began = time.perf_counter()
        result = train(cfg, progress=False)
        wall = time.perf_counter() - began
    if result.cache_used != feature_cache:
        raise RuntimeError(f"run {name}: feature cache used={result.cache_used}, expected {feature_cache}")
    return Run(name, warmup, steady_steps(clock.times, warmup), wall, sum(builds) if builds else None)


# ---------------------------------------------------------------------------------------------------
# open_clip's own --lock-image training, in its own environment

_DRIVER = """
import json, sys, time
import open_clip, torch
from open_clip_train.main import main
from torch.optim.optimizer import register_optimizer_step_post_hook
config_dir, out, device, *argv = sys.argv[1:]
open_clip.add_model_config(config_dir)
times = []
def hook(optimizer, args, kwargs):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    times.append(time.perf_counter())
register_optimizer_step_post_hook(hook)
began = time.perf_counter()
main(argv)
json.dump({"times": times, "wall_s": time.perf_counter() - began, "torch": torch.__version__,
           "open_clip": open_clip.__version__}, open(out, "w"))
"""


def openclip_python(venv: Path = OPENCLIP_VENV) -> Path | None:
    python = venv / "bin" / "python"
    if not python.is_file():
        return None
    find = "import importlib.util as u, sys; sys.exit(u.find_spec('open_clip_train') is None)"
    probe = subprocess.run([python, "-c", find], capture_output=True)
    return python if probe.returncode == 0 else None


def setup_openclip(venv: Path = OPENCLIP_VENV) -> Path:
    """Create ``venv`` with open_clip_torch (which ships open_clip_train) and reuse this environment's
    torch, torchvision and timm through a ``.pth`` file, so that both benchmarks run the same torch."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, "_project_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # pandas: imported by open_clip_train.data but not among open_clip_torch's dependencies.
    pip = [python, "-m", "pip", "install", "--quiet", f"open_clip_torch=={OPENCLIP_VERSION}", "pandas"]
    subprocess.run(pip, check=True)
    return python


def openclip_model_config(sizes: Sizes) -> dict[str, Any]:
    """The same towers in open_clip: the timm trunk (its own token pooling) + a linear projection with
    bias, and open_clip's text transformer at the scratch tower's sizes (vocabulary: open_clip's BPE)."""
    return {
        "embed_dim": sizes.embed_dim,
        "vision_cfg": {
            "image_size": sizes.image_size,
            "timm_model_name": sizes.image_tower,
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "linear",
            "timm_proj_bias": True,
        },
        "text_cfg": {
            "context_length": sizes.context_length,
            "vocab_size": 49408,
            "width": sizes.text_width,
            "heads": sizes.text_heads,
            "layers": sizes.text_layers,
        },
    }


def run_openclip(sizes: Sizes, work: Path, device: str, python: Path | None) -> Run:
    warmup, measured = sizes.openclip
    run = Run(OPENCLIP_RUN, warmup)
    if python is None:
        run.note = "not run: no bench/.cache/openclip-venv (`python -m bench.training --setup-openclip`)"
        return run
    configs = work / "openclip-configs"
    configs.mkdir(parents=True, exist_ok=True)
    (configs / "LiT-bench.json").write_text(json.dumps(openclip_model_config(sizes), indent=1))
    (work / "openclip_driver.py").write_text(_DRIVER)
    out = work / "openclip.json"
    args = [
        "--model", "LiT-bench", "--lock-image", "--dataset-type", "synthetic",
        "--train-num-samples", str(sizes.batch * (warmup + measured)), "--batch-size", str(sizes.batch),
        "--epochs", "1", "--workers", "0", "--precision", "fp32", "--device", device,
        "--lr", "1e-3", "--warmup", "10", "--seed", "0", "--log-every-n-steps", "1000",
        "--logs", "none", "--name", "bench", "--report-to", "",
    ]  # fmt: skip
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [python, work / "openclip_driver.py", configs, out, device, *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or not out.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        run.note = f"failed (exit {done.returncode}): {tail[0][:200]}"
        return run
    report = json.loads(out.read_text())
    run.steps = steady_steps(report["times"], warmup)
    run.wall_s = report["wall_s"]
    run.note = f"open_clip_torch {report['open_clip']}, torch {report['torch']}"
    return run


# ---------------------------------------------------------------------------------------------------
# The benchmark


def run(out: Path = RESULTS, tiny: bool = False, device: str = "cpu", openclip: bool = True) -> Path:
    """Run the benchmark and write ``<out>/training.{md,json,png}``; returns the Markdown path."""
    sizes = TINY if tiny else FULL
    load_before = os.getloadavg()
    python = openclip_python() if openclip else None
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        work = Path(tmp)
        uncached = run_lit(sizes, work, "uncached", False, *sizes.uncached, device)
        uncached.name = "LiT, no feature cache"
        cold = run_lit(sizes, work, "cached-cold", True, *sizes.cached, device)
        cold.name = "LiT, feature cache (first run: builds it)"
        warm = run_lit(sizes, work, "cached-warm", True, *sizes.cached, device)
        warm.name = "LiT, feature cache (already built)"
        if cold.cache_build_s is None or warm.cache_build_s is not None:
            raise RuntimeError("the first cached run should build the cache and the second reuse it")
        cold.note = f"{sizes.dataset} images through the locked tower"
        if openclip:
            theirs = run_openclip(sizes, work, device, python)
        else:
            theirs = Run(OPENCLIP_RUN, sizes.openclip[0], note="not run (openclip=False)")
    load_after = os.getloadavg()
    runs = [uncached, cold, warm, theirs]
    return _write(out, sizes, device, runs, (load_before, load_after), tiny)


def _write(
    out: Path,
    sizes: Sizes,
    device: str,
    runs: list[Run],
    load: tuple[tuple[float, ...], tuple[float, ...]],
    tiny: bool,
) -> Path:
    uncached, cold, warm, theirs = runs
    base = uncached.steps_per_s
    cached = warm.steps_per_s
    speedup = cached / base
    build = cold.cache_build_s or 0.0
    rows = []
    for r in runs:
        if not r.ran:
            rows.append([r.name, "-", "-", "-", "-", "-", r.note])
            continue
        rows.append(
            [
                r.name,
                len(r.steps),
                r.steps_per_s,
                r.s_per_step,
                "-" if r.cache_build_s is None else round(r.cache_build_s, 1),
                f"{r.steps_per_s / base:.1f}x",
                r.note,
            ]
        )
    per_epoch = max(1, sizes.dataset // sizes.batch)
    saved_per_step = uncached.s_per_step - warm.s_per_step
    breakeven = build / saved_per_step if saved_per_step > 0 else float("inf")
    horizon = []
    for label, n in [
        ("one epoch", per_epoch),
        ("10 epochs", 10 * per_epoch),
        ("100 epochs", 100 * per_epoch),
    ]:
        t_uncached = n * uncached.s_per_step
        t_cached = build + n * warm.s_per_step
        horizon.append([f"{n} ({label})", t_uncached, t_cached, f"{t_uncached / t_cached:.1f}x"])
    met = speedup >= TARGET
    verdict = "met" if met else "NOT met"
    towers = (
        f"image tower timm `{sizes.image_tower}` (random init, locked, mode Lu) + linear image head; "
        f"text tower scratch {sizes.text_layers} layers x width {sizes.text_width}, "
        f"context {sizes.context_length}; batch {sizes.batch}, fp32, synthetic data at "
        f"{sizes.image_size} px, {sizes.dataset} training images; device {device}"
    )
    loads = "load average (1/5/15 min) {} before, {} after".format(
        *("/".join(f"{v:.2f}" for v in avg) for avg in load)
    )
    notes = [
        towers,
        "steps/s: measured steps only (warm-up excluded: "
        f"{uncached.warmup} uncached, {warm.warmup} cached, {theirs.warmup} open_clip); a step is the time "
        "between two optimizer.step() calls (data, forward, backward, update)",
        "cache build s: time in the cache build (the locked tower run once over every training image, "
        "writing the shards); the second cached run finds the cache by its key and skips it",
        f"open_clip: `open_clip_train.main --lock-image` on the same towers (timm trunk + linear projection; "
        f"its text transformer at the same sizes), batch {sizes.batch}, fp32, its `synthetic` dataset, "
        "`--workers 0`; it has no feature cache, so every step runs the locked tower",
        loads,
    ]
    table = Table(
        "Training steps/s",
        ["run", "steps measured", "steps/s", "s/step", "cache build s", "vs uncached", "note"],
        rows,
        notes,
    )
    end_to_end = Table(
        "Time to train N steps, counting the cache build",
        ["steps N", "no cache (s)", "feature cache incl. build (s)", "speed-up"],
        horizon,
        [
            f"no cache: N x {uncached.s_per_step:.3g} s; "
            f"cache: {build:.3g} s build + N x {warm.s_per_step:.3g} s",
            f"the cache pays for itself after {breakeven:.1f} steps "
            f"({breakeven / per_epoch:.2f} epochs of {sizes.dataset} images at batch {sizes.batch})",
        ],
    )
    summary = [
        f"Feature cache: **{cached:,.3g} steps/s** against {base:.3g} steps/s without it: "
        f"**{speedup:,.0f}x** — the {TARGET:.0f}x target is **{verdict}**. "
        f"Building the cache took {build:.1f} s once; it pays for itself after {breakeven:.1f} steps.",
    ]
    if theirs.ran:
        summary.append(
            f"open_clip `--lock-image` on the same towers: {theirs.steps_per_s:.3g} steps/s "
            f"({theirs.steps_per_s / base:.2f}x the project's uncached run, "
            f"the cache {cached / theirs.steps_per_s:,.0f}x faster)."
        )
    else:
        summary.append(f"open_clip `--lock-image`: {theirs.note}.")
    if tiny:
        summary.append("Tiny sizes (a smoke test): the figures mean nothing.")
    figures = {
        "sizes": asdict(sizes),
        "device": device,
        "load_average": {"before": load[0], "after": load[1]},
        "runs": [r.figures() for r in runs],
        "speedup": speedup,
        "target": TARGET,
        "target_met": met,
        "cache_build_s": build,
        "breakeven_steps": breakeven,
    }
    return write_result(
        out,
        "training",
        "LiT training with and without the locked-feature cache",
        [table, end_to_end],
        figures,
        plot=_plot(runs, base),
        summary=summary,
    )


def _plot(runs: list[Run], base: float):
    from matplotlib.figure import Figure

    shown = [r for r in runs if r.ran]
    fig = Figure(figsize=(7.5, 3.6))
    ax = fig.add_subplot()
    labels = [r.name.replace(" (", "\n(") for r in shown]
    values = [r.steps_per_s for r in shown]
    colours = ["#999999" if "no feature" in r.name or "open_clip" in r.name else "#2a7ab0" for r in shown]
    bars = ax.barh(labels, values, color=colours)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("training steps/s (log scale, higher is better)")
    for bar, r in zip(bars, shown, strict=True):
        ax.text(
            bar.get_width() * 1.05,
            bar.get_y() + bar.get_height() / 2,
            f"{r.steps_per_s:,.3g}/s ({r.steps_per_s / base:,.1f}x)",
            va="center",
            fontsize=8,
        )
    ax.set_xlim(min(values) / 2, max(values) * 8)
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    return fig


def main(
    tiny: Annotated[bool, typer.Option(help="tiny sizes (a smoke test; the figures mean nothing)")] = False,
    out: Annotated[Path, typer.Option(help="results folder")] = RESULTS,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    setup_openclip_env: Annotated[
        bool, typer.Option("--setup-openclip", help=f"first create {OPENCLIP_VENV.name} (open_clip_torch)")
    ] = False,
) -> None:
    if setup_openclip_env:
        setup_openclip()
    run(out, tiny=tiny, device=device)


if __name__ == "__main__":
    typer.run(main)
