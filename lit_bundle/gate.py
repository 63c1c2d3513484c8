"""The accuracy gate's thresholds: what a lower-precision variant's recorded figures must reach to be
published (checked at export) and to be run (checked again by the gateway, so that a hand-edited or
older manifest cannot slip an unchecked variant in)."""

from __future__ import annotations

from lit_bundle.manifest import PrecisionGate

MIN_COSINE = 0.99
MIN_TOP1_AGREEMENT = 0.995
MAX_ACCURACY_CHANGE = 0.005


def gate_failures(gate: PrecisionGate) -> list[str]:
    """What the variant missed, each with the threshold and by how much; empty when it passed."""
    failures = []
    for what, value in (("image", gate.min_cosine_image), ("text", gate.min_cosine_text)):
        if not value >= MIN_COSINE:
            failures.append(
                f"worst {what} cosine to fp32 {value:.4f} < {MIN_COSINE} (short by {MIN_COSINE - value:.4f})"
            )
    if not gate.top1_agreement >= MIN_TOP1_AGREEMENT:
        short = (MIN_TOP1_AGREEMENT - gate.top1_agreement) * 100
        failures.append(
            f"top-1 agrees with fp32 on {gate.top1_agreement:.2%} of {gate.images} images < "
            f"{MIN_TOP1_AGREEMENT:.1%} (short by {short:.2f} points)"
        )
    change = gate.accuracy - gate.accuracy_fp32
    if not abs(change) <= MAX_ACCURACY_CHANGE:
        failures.append(
            f"zero-shot accuracy {gate.accuracy:.2%} vs fp32 {gate.accuracy_fp32:.2%}: {change * 100:+.2f} "
            f"points, beyond +-{MAX_ACCURACY_CHANGE * 100:.1f}"
        )
    return failures


def gate_summary(gate: PrecisionGate) -> str:
    return (
        f"min cosine image {gate.min_cosine_image:.5f} text {gate.min_cosine_text:.5f}, top-1 agreement "
        f"{gate.top1_agreement:.2%}, accuracy {gate.accuracy:.2%} vs fp32 {gate.accuracy_fp32:.2%} "
        f"({gate.images} images, {gate.classes} classes)"
    )
