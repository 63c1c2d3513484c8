"""Hugging Face CLIP and SigLIP imported as float16 bundles: pixels cast first, LayerNormalization and
Softmax kept in float32 (weights the exporter shares between layers too), the gate's figures recorded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
import pytest

from lit_bundle.repository import load_bundle
from tests.test_importers import _save_clip, _save_siglip
from training import export as export_module
from training.importers import import_hf


@pytest.mark.parametrize(("kind", "save"), [("clip", _save_clip), ("siglip", _save_siglip)])
def test_fp16_import_keeps_norms_in_float32(kind: str, save: Callable[[Path], Path], tmp_path: Path) -> None:
    source = save(tmp_path / kind)
    manifest = import_hf(str(source), tmp_path / "models", f"{kind}-half", fp16=True)
    assert manifest.provenance["precision"] == "fp16"
    assert manifest.provenance["fp16_checked_on"] == export_module.fp16_provider()
    assert manifest.metrics["export_fp16_min_cosine_image"] >= export_module.FP16_MIN_COSINE
    assert manifest.metrics["export_fp16_min_cosine_text"] >= export_module.FP16_MIN_COSINE
    bundle = load_bundle(tmp_path / "models", f"{kind}-half")

    image = onnx.load(str(bundle.image_model)).graph
    assert [n.op_type for n in image.node if "pixels" in n.input] == ["Cast"]
    for path in (bundle.image_model, bundle.text_model):
        graph = onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph
        types = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.output)}
        types |= {t.name: t.data_type for t in graph.initializer}
        kept = [n for n in graph.node if n.op_type in ("LayerNormalization", "Softmax")]
        assert {n.op_type for n in kept} == {"LayerNormalization", "Softmax"}
        for node in kept:
            tensors = [name for name in (*node.input, *node.output) if name]
            assert {types[name] for name in tensors} == {onnx.TensorProto.FLOAT}, (node.name, tensors)
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer)
