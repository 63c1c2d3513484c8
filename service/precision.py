"""Which precision a model runs (``LIT_PRECISION``): its fp32 ``model.onnx`` files or a variant of them.

A bundle may carry lower-precision variants of both encoders (``Manifest.variants``), each published only
after it passed its accuracy gate at export. ``auto`` runs the first variant the CPU can run fast (int8,
then bf16) on the CPU provider, and the fp32 files on an accelerator or where no variant fits; ``fp32``
always runs the fp32 files; ``int8`` and ``bf16`` run that variant or refuse to load the model, saying
what is missing and how to fix it. The CPU's features are read from ``/proc/cpuinfo`` when asked, never
at import.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lit_bundle.gate import gate_failures
from lit_bundle.manifest import Manifest, variant

Precision = Literal["fp32", "int8", "bf16"]

CPUINFO = Path("/proc/cpuinfo")
X86 = {"x86_64", "amd64"}
ARM = {"aarch64", "arm64"}
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
VARIANT_ORDER: tuple[Precision, ...] = ("int8", "bf16")  # auto's preference on the CPU provider
FIX = "set LIT_PRECISION=auto (the best precision this machine can run) or LIT_PRECISION=fp32"
NO_OPENVINO = (
    "bf16 runs the fp32 files through OpenVINO with a bf16 hint, and this gateway has no OpenVINO runtime yet"
)


class PrecisionError(ValueError):
    """The precision asked for cannot run this model here; the message says why and how to fix it."""


@dataclass(frozen=True)
class PrecisionChoice:
    precision: Precision
    image_file: str
    """The image encoder's ONNX file, relative to the repository root."""
    text_file: str
    reason: str
    """One line for the log: what runs and why (and every variant passed over, with why)."""


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str]:
    """The CPU's feature flags (x86 ``flags``, Arm ``Features``); an empty set where they cannot be read."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def cpu_lacks(precision: str, cpu_flags: Iterable[str], machine: str) -> str | None:
    """Why this CPU cannot run ``precision`` fast (None when it can)."""
    flags, arch = set(cpu_flags), machine.lower()
    if precision == "int8":
        if arch in ARM or (arch in X86 and "avx2" in flags):
            return None
        return (
            "this CPU lacks AVX2" if arch in X86 else f"int8 needs x86-64 with AVX2 or aarch64, not {machine}"
        )
    if precision == "bf16":
        return None if any(flag in flags for flag in BF16_FLAGS) else "this CPU lacks AVX512-BF16 and AMX"
    return None


def own_precision(manifest: Manifest) -> str:
    """The precision of the bundle's own ``model.onnx`` files: fp32, or fp16 for a float16 export."""
    return manifest.provenance.get("precision", "fp32")


def _fp32(manifest: Manifest, why: str) -> PrecisionChoice:
    reason = (
        f"{manifest.name} v{manifest.version} runs its model.onnx files ({own_precision(manifest)}): {why}"
    )
    return PrecisionChoice("fp32", manifest.image_encoder.file, manifest.text_encoder.file, reason)


def _variant_choice(manifest: Manifest, precision: Precision, reason: str) -> PrecisionChoice:
    chosen = variant(manifest, precision)
    assert chosen is not None
    gate = chosen.gate
    figures = (
        f"gate: top-1 agreement with fp32 {gate.top1_agreement:.4f}, accuracy {gate.accuracy:.4f} "
        f"vs {gate.accuracy_fp32:.4f} on {gate.images} images"
    )
    return PrecisionChoice(precision, chosen.image_file, chosen.text_file, f"{reason} ({figures})")


def _missed_gate(manifest: Manifest, precision: str) -> str | None:
    """What the ``precision`` variant's recorded gate figures miss (a hand-edited manifest), or None."""
    found = variant(manifest, precision)
    missed = gate_failures(found.gate) if found is not None else []
    return f"its recorded gate figures miss the gate ({'; '.join(missed)})" if missed else None


def _why_not(manifest: Manifest, precision: str, flags: set[str], machine: str) -> str | None:
    """Why the ``precision`` variant cannot run (None when it can)."""
    if variant(manifest, precision) is None:
        return f"no {precision} variant in the manifest"
    missed = _missed_gate(manifest, precision)
    if missed is not None:
        return f"{precision} variant present but {missed}"
    lacks = cpu_lacks(precision, flags, machine)
    if lacks is not None:
        return f"{precision} variant present but {lacks}"
    if precision == "bf16":
        return f"bf16 variant present but {NO_OPENVINO}"
    return None


def choose_precision(
    manifest: Manifest,
    requested: str,
    accelerated: bool,
    cpu_flags: set[str],
    machine: str | None = None,
) -> PrecisionChoice:
    """The files ``manifest``'s model runs for ``LIT_PRECISION=requested``. ``accelerated``: a CUDA or
    TensorRT provider is asked for; ``machine`` defaults to ``platform.machine()``. A PrecisionError when
    an explicit ``int8`` or ``bf16`` cannot be met."""
    machine = machine or platform.machine()
    model = f"{manifest.name} v{manifest.version}"
    if requested == "fp32":
        return _fp32(manifest, "LIT_PRECISION=fp32")
    if requested == "auto":
        if accelerated:
            return _fp32(
                manifest,
                "LIT_PRECISION=auto on an accelerator provider (CUDA/TensorRT); lower-precision variants "
                "are for the CPU provider",
            )
        skipped: list[str] = []
        for candidate in VARIANT_ORDER:
            why = _why_not(manifest, candidate, cpu_flags, machine)
            if why is None:
                passed = "".join(f"; {s}" for s in skipped)
                return _variant_choice(
                    manifest, candidate, f"{model} runs {candidate}: LIT_PRECISION=auto{passed}"
                )
            skipped.append(why)
        return _fp32(manifest, "LIT_PRECISION=auto; " + "; ".join(skipped))
    if requested not in ("int8", "bf16"):
        raise PrecisionError(f"LIT_PRECISION={requested!r} is not one of auto, fp32, int8, bf16")
    wanted: Precision = "int8" if requested == "int8" else "bf16"
    problems = []
    if variant(manifest, requested) is None:
        problems.append(
            f"the manifest has no {requested} variant (make one with `lit-train add-variant "
            f"{manifest.name} --precision {requested}`, or export with `lit-train export ... "
            f"--precision {requested}`)"
        )
    missed = _missed_gate(manifest, requested)
    if missed is not None:
        problems.append(f"the {requested} variant cannot be trusted: {missed}")
    if accelerated:
        problems.append(
            f"an accelerator provider (CUDA/TensorRT) is in use and {requested} variants run on the CPU "
            'provider (LIT_PROVIDERS=["cpu"] runs them)'
        )
    lacks = cpu_lacks(requested, cpu_flags, machine)
    if lacks is not None:
        problems.append(lacks)
    if requested == "bf16":
        problems.append(NO_OPENVINO)
    if problems:
        raise PrecisionError(
            f"LIT_PRECISION={requested} cannot run {model}: " + "; ".join(problems) + f". Fix: {FIX}"
        )
    return _variant_choice(manifest, wanted, f"{model} runs {wanted}: LIT_PRECISION={wanted}")
