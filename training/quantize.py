"""int8 variants of exported encoders, by ONNX Runtime's static post-training quantisation.

The toolchain was chosen by measurement (``python -m bench.cpu_precision``, the CLIP ViT-B/32-sized image
encoder on 2 AMD EPYC cores with AVX2 and neither AVX512 nor AMX): ONNX Runtime's static quantiser gave
1.87x fp32's images/s at batch 1 and 1.75x at batch 8; OpenVINO with NNCF's int8 quantisation 1.13x and
0.85x; OpenVINO fp32 1.18x and 1.03x. bf16 needs AVX512-BF16 or AMX, which that CPU lacks.

What is quantised: every MatMul and Gemm (weights per output channel in int8, activations per tensor in
uint8 with ranges calibrated on real inputs). Softmax, LayerNorm, GELU and the final L2 normalisation stay
fp32. Optionally attention's activation-by-activation MatMuls (QK^T and AV) stay fp32 too: on the
ViT-B/32-sized encoder that changed neither the worst cosine to fp32 (0.99966 either way) nor much speed
(batch 8: 25 images/s with them in fp32, 29 without), so it is the fallback when a model misses its gate.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx

QUANTISED_OPS = ("MatMul", "Gemm")
METHOD = (
    "onnxruntime static QDQ int8 (per-channel int8 weights, uint8 activations, min-max calibration on "
    "{calibration}), {attention}; Softmax, LayerNorm and normalisation in fp32"
)


def activation_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMul nodes whose inputs are both computed (attention's QK^T and AV): kept out of int8."""
    constants = {init.name for init in model.graph.initializer}
    constants |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and not any(name in constants for name in node.input)
    ]


def quantize_int8(
    fp32: Path, out: Path, calibration: Iterable[dict[str, np.ndarray]], keep_attention: bool = False
) -> None:
    """Write the int8 variant of the ONNX graph ``fp32`` to ``out``, calibrating activation ranges on the
    feeds ``calibration`` yields (a few dozen real inputs are enough for min-max ranges); with
    ``keep_attention``, attention's activation-by-activation MatMuls stay fp32."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Feeds(CalibrationDataReader):
        def __init__(self, feeds: Iterator[dict[str, np.ndarray]]) -> None:
            self.feeds = feeds

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    model = onnx.load(str(fp32))
    named = _named_nodes(model)
    excluded = activation_matmuls(named) if keep_attention else []
    with tempfile.TemporaryDirectory() as work:
        source = Path(work) / "named.onnx"
        onnx.save(named, str(source))
        # The quantiser logs every node it leaves alone; what it did is recorded in the manifest instead.
        quiet = logging.getLogger().level
        logging.getLogger().setLevel(max(quiet, logging.ERROR))
        try:
            quantize_static(
                str(source), str(out), Feeds(iter(calibration)),
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                op_types_to_quantize=list(QUANTISED_OPS), nodes_to_exclude=excluded,
            )  # fmt: skip
        finally:
            logging.getLogger().setLevel(quiet)


def _named_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with a unique name on every node (the quantiser excludes nodes by name)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    taken: set[str] = set()
    for index, node in enumerate(copy.graph.node):
        if not node.name or node.name in taken:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
        taken.add(node.name)
    return copy
