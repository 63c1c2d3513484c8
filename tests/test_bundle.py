"""Export a trained checkpoint as a bundle; verification, versions, promotion, pruning and damage."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from typer.testing import CliRunner

from harness.gateway import running_gateway
from lit_bundle.manifest import BundleError, manifest_path, read_manifest
from lit_bundle.preprocess import resize_and_crop
from lit_bundle.repository import active_version, load_bundle, promote, prune, versions
from lit_bundle.signature import check_signature
from tests.helpers import TINY_IMAGE, tiny_checkpoint, tiny_config
from training import export as export_module
from training import onnx_graphs
from training.cli import app
from training.config import ImageTowerConfig
from training.data.pairs import pixel_transform
from training.data.synthetic import SyntheticWorld
from training.export import ExportError, export_bundle
from training.export_checkpoint import request_from_checkpoint
from training.factory import load_trained
from training.towers import build_image_tower
from training.train import train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), steps=3)


@pytest.fixture
def repository(tmp_path: Path, checkpoint: Path) -> Path:
    repo = tmp_path / "repo"
    export_bundle(request_from_checkpoint(checkpoint, "tiny", progress=False), repo)
    return repo


def test_exported_bundle_verifies_and_matches_torch(repository: Path, checkpoint: Path) -> None:
    bundle = load_bundle(repository)
    manifest = bundle.manifest
    assert (manifest.name, manifest.version, active_version(repository, "tiny")) == ("tiny", 1, 1)
    assert {"heldout_top1", "seen_top1", "export_max_abs_diff_image"} <= set(manifest.metrics)
    assert manifest.provenance["git_commit"] and "config" in manifest.provenance
    for encoder in (manifest.image_encoder, manifest.text_encoder):
        check_signature(bundle.path(encoder.file), encoder)

    # Serving path (uint8 pixels from Pillow, tokenizer.json) vs training path (float tensors, torch model).
    model, _ = load_trained(checkpoint)
    images = [SyntheticWorld(image_size=32, seed=7).sample("eval", i)[0] for i in range(6)]
    pixels = np.stack([np.asarray(resize_and_crop(im, manifest.preprocess)) for im in images])
    session = ort.InferenceSession(str(bundle.image_model), providers=["CPUExecutionProvider"])
    onnx_img = session.run(None, {"pixels": pixels})[0]
    with torch.no_grad():
        batch = torch.stack([pixel_transform(model.image_tower.preprocess)(im) for im in images])
        torch_img = model.encode_image(batch).numpy()
    assert np.abs(onnx_img - torch_img).max() <= 1e-4

    texts = ["a photo of a red circle.", "a blue star", "an image of a pink heart."]
    serving = Tokenizer.from_file(str(bundle.tokenizer)).encode_batch(texts)
    training_ids = model.text_tower.tokenize(texts)["input_ids"].numpy()
    assert np.array_equal(np.array([e.ids for e in serving]), training_ids)


def test_versions_promote_and_prune(repository: Path, checkpoint: Path) -> None:
    request = request_from_checkpoint(checkpoint, "tiny", progress=False)
    second = export_bundle(request, repository)
    assert second.version == 2 and versions(repository, "tiny") == [1, 2]
    for folder in (repository / "tiny_image" / "2", repository / "tiny_text" / "2"):
        assert folder.stat().st_mode & 0o777 == 0o755  # readable by a Triton or gateway of another user
    assert active_version(repository, "tiny") == 1  # a new export does not replace the served version
    promote(repository, "tiny", 2)
    assert load_bundle(repository).manifest.version == 2
    export_bundle(request, repository, activate=False)
    assert prune(repository, "tiny", keep=1) == [1]
    assert versions(repository, "tiny") == [2, 3] and active_version(repository, "tiny") == 2
    with pytest.raises(BundleError, match="does not exist"):
        promote(repository, "tiny", 9)


class TracesDifferently(torch.nn.Module):
    """An encoder whose eager output differs from the graph tracing records (Python-side branching)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.inner(pixels)
        return out if torch.jit.is_tracing() else out + 0.5


def test_failed_check_writes_nothing(tmp_path: Path, checkpoint: Path) -> None:
    request = request_from_checkpoint(checkpoint, "tiny", progress=False)
    request.image_encoder = TracesDifferently(request.image_encoder)
    repo = tmp_path / "repo"
    with pytest.raises(ExportError, match="image embeddings: ONNX Runtime differs from torch"):
        export_bundle(request, repo)
    assert versions(repo, "tiny") == []
    assert [p for p in repo.rglob("*") if p.is_file()] == []


@pytest.fixture(scope="module")
def half(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path) -> Path:
    """A repository holding a float16 export of the tiny model as bundle ``half``."""
    repo = tmp_path_factory.mktemp("half")
    export_bundle(request_from_checkpoint(checkpoint, "half", progress=False), repo, fp16=True)
    return repo


def test_fp16_export_is_gated_where_it_runs(half: Path) -> None:
    bundle = load_bundle(half, "half")
    manifest = bundle.manifest
    assert manifest.provenance["precision"] == "fp16"
    assert manifest.provenance["fp16_checked_on"] == export_module.fp16_provider()
    for kind in ("image", "text"):
        assert manifest.metrics[f"export_fp16_min_cosine_{kind}"] >= export_module.FP16_MIN_COSINE
    for encoder in (manifest.image_encoder, manifest.text_encoder):
        check_signature(bundle.path(encoder.file), encoder)  # uint8/int64 in, float32 out, as for fp32


def test_fp16_provider_is_where_the_bundle_runs() -> None:
    cpu, cuda, trt = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
    assert export_module.fp16_provider([trt, cuda, cpu]) == cuda
    assert export_module.fp16_provider([trt, cpu]) == trt
    assert export_module.fp16_provider(["AzureExecutionProvider", cpu]) == cpu


def test_fp16_check_of_a_deeper_text_tower_runs(tmp_path: Path) -> None:
    """ONNX Runtime 1.32's CPU session segfaults on a float16 text graph of two or more layers unless its
    NCHWc layout optimiser is off: the export (in a child process, so a crash fails only this test) passes."""
    torch.manual_seed(0)
    tower = build_image_tower(ImageTowerConfig(**TINY_IMAGE), pretrained=False)
    weights = tmp_path / "tower.safetensors"
    save_file({k: v.contiguous() for k, v in tower.state_dict().items()}, str(weights))
    deeper = train(
        tiny_config(tmp_path, weights, "steps=1", "model.text.layers=2"), progress=False
    ).checkpoint
    code = (
        "import sys; from pathlib import Path; from training.export import export_bundle; "
        "from training.export_checkpoint import request_from_checkpoint; "
        "m = export_bundle(request_from_checkpoint(Path(sys.argv[1]), 'deep', progress=False), "
        "Path(sys.argv[2]), fp16=True); print(m.metrics['export_fp16_min_cosine_text'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(deeper), str(tmp_path / "repo")],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.split()[-1]) >= export_module.FP16_MIN_COSINE
    # the gateway serves it on the CPU too (the same optimiser off), rather than crashing at start
    with running_gateway(tmp_path, LIT_REPOSITORY=str(tmp_path / "repo"), LIT_PROVIDERS='["cpu"]') as url:
        body = {"texts": ["a red circle", "a blue square"]}
        answer = httpx.post(f"{url}/v1/embed/text", json=body, timeout=60)
    assert answer.status_code == 200 and len(answer.json()["embeddings"]) == 2


def _types(path: Path) -> tuple[onnx.GraphProto, dict[str, int]]:
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.value_info, *graph.output)}
    return graph, types | {t.name: t.data_type for t in graph.initializer}


def _ancestors(producers: dict[str, onnx.NodeProto], node: onnx.NodeProto) -> set[str]:
    found, stack = set(), list(node.input)
    while stack:
        name = stack.pop()
        if name not in found:
            found.add(name)
            stack.extend(producers[name].input if name in producers else ())
    return found


def test_fp16_keeps_norms_and_softmax_in_float32(half: Path) -> None:
    """LayerNormalization, Softmax and the final L2 normalisation read and write float32 in the saved
    graphs (with the 1e-12 epsilon intact), while the weights of everything else are float16."""
    manifest = load_bundle(half, "half").manifest
    float16, float32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    seen: set[str] = set()
    for encoder in (manifest.image_encoder, manifest.text_encoder):
        graph, types = _types(half / encoder.file)
        producers = {name: node for node in graph.node for name in node.output}
        final = producers["embedding"]
        (norm,) = [node for node in graph.node if node.op_type == "ReduceL2"]
        (clip,) = [node for node in graph.node if node.op_type == "Clip" and node.input[0] == norm.output[0]]
        kept = [node for node in graph.node if node.op_type in ("LayerNormalization", "Softmax")]
        for node in (final, norm, clip, *kept):
            tensors = [name for name in (*node.input, *node.output) if name]
            assert [types[name] for name in tensors] == [float32] * len(tensors), (node.name, tensors)
            seen.add(node.op_type)
        assert final.op_type == "Div" and norm.output[0] in _ancestors(producers, final)
        epsilon = onnx.numpy_helper.to_array(producers[clip.input[1]].attribute[0].t)
        assert epsilon.dtype == np.float32 and epsilon == np.float32(1e-12)
        weights = [t for t in graph.initializer if t.data_type in (float16, float32) and len(t.dims) >= 2]
        assert weights and all(t.data_type == float16 for t in weights)
        assert graph.output[0].type.tensor_type.elem_type == float32
    assert seen == {"Div", "ReduceL2", "Clip", "LayerNormalization", "Softmax"}


def _perturb_image_weights(path: Path) -> None:
    """Add noise to the largest float16 weight of an image graph (a corrupted float16 conversion)."""
    model = onnx.load(str(path))
    weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    largest = max(weights, key=lambda t: int(np.prod(t.dims)))
    array = onnx.numpy_helper.to_array(largest).astype(np.float32)
    noise = np.random.default_rng(0).standard_normal(array.shape) * array.std() * 0.5
    largest.CopyFrom(onnx.numpy_helper.from_array((array + noise).astype(np.float16), largest.name))
    onnx.save(model, str(path))


def test_fp16_gate_refuses_a_damaged_graph_naming_the_worst_row(
    tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    convert = onnx_graphs.to_fp16

    def damaged(path: Path) -> None:
        convert(path)
        if path.parent.parent.name.endswith("_image"):
            _perturb_image_weights(path)

    monkeypatch.setattr(onnx_graphs, "to_fp16", damaged)
    request = request_from_checkpoint(checkpoint, "half", progress=False)
    with pytest.raises(ExportError) as info:
        export_bundle(request, tmp_path, fp16=True)
    message = str(info.value)
    match = re.search(
        r"image embeddings: float16 on \w+ has cosine similarity (0\.\d+) to torch float32 at "
        r"check image \d+ \(the worst row; the gate is >= 0\.999\)",
        message,
    )
    assert match, message
    assert float(match.group(1)) < export_module.FP16_MIN_COSINE
    assert versions(tmp_path, "half") == [] and [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_min_cosine_names_the_worst_row() -> None:
    expected = np.eye(3, 4, dtype=np.float32)
    got = expected.copy()
    got[1, 2] = 0.1  # cosine 1/sqrt(1.01) = 0.995037
    got[2, 0] = 0.01  # cosine 0.99995
    rows = ["a", "b", "c"]
    assert export_module._min_cosine("x", expected, expected, rows, "cpu") == pytest.approx(1.0)
    with pytest.raises(ExportError, match=r"x: float16 on cpu has cosine similarity 0\.995037 .* at b \("):
        export_module._min_cosine("x", expected, got, rows, "cpu")
    got[1, 2] = 0.0
    assert export_module._min_cosine("x", expected, got, rows, "cpu") == pytest.approx(0.99995, abs=1e-6)


def test_top1_must_agree_on_every_image_even_a_near_tie() -> None:
    texts = np.eye(2, dtype=np.float32)
    images = np.array([[0.8, 0.6], [0.7070, 0.7072]], dtype=np.float32)  # image 1: a near-tie, margin 2e-4
    export_module._check_top1(images, texts, images, texts, ["a", "b"])
    flipped = images[:, ::-1].copy()
    flipped[0] = images[0]
    with pytest.raises(
        ExportError, match=r"on 1 of 2 images \(first: image 1, torch 'b', ONNX 'a'; .* 2\.00e-04\)"
    ):
        export_module._check_top1(images, texts, flipped, texts, ["a", "b"])


def test_fp16_gate_never_falls_back_to_the_cpu(
    tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A provider that does not load is an error, not a float16 check on the CPU under its name."""
    accelerators = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
    missing = next((p for p in accelerators if p not in ort.get_available_providers()), None)
    if missing is None:
        pytest.skip("this ONNX Runtime has every accelerator provider")
    monkeypatch.setattr(export_module, "fp16_provider", lambda: missing)
    with pytest.raises(ExportError, match=f"{missing} did not load"):
        export_bundle(request_from_checkpoint(checkpoint, "half", progress=False), tmp_path, fp16=True)
    assert versions(tmp_path, "half") == []


class TransposeFirst(export_module.ImageGraph):
    """The image graph as it was: uint8 pixels transposed before the cast to float."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels.permute(0, 3, 1, 2).float() - self.mean) / self.std
        return torch.nn.functional.normalize(self.encoder(x).float(), dim=-1)


def test_uint8_pixels_feed_only_a_cast(
    repository: Path, half: Path, tmp_path: Path, checkpoint: Path
) -> None:
    """TensorRT takes a uint8 input only into a Cast: every export casts first, and the check refuses a
    graph that transposes first."""
    for repo, name in ((repository, "tiny"), (half, "half")):
        path = repo / load_bundle(repo, name).manifest.image_encoder.file
        onnx_graphs.check_cast_first(path)
        graph = onnx.load(str(path)).graph
        assert [n.op_type for n in graph.node if "pixels" in n.input] == ["Cast"]

    request = request_from_checkpoint(checkpoint, "tiny", progress=False)
    graph = TransposeFirst(request.image_encoder, request.preprocess).eval()
    bad = tmp_path / "transpose_first.onnx"
    export_module._export(graph, (torch.zeros(2, 32, 32, 3, dtype=torch.uint8),), bad, ["pixels"])
    with pytest.raises(ExportError, match=r"uint8 input 'pixels' feeds Transpose .*only into a Cast"):
        onnx_graphs.check_cast_first(bad)


def test_export_refuses_a_graph_that_transposes_first(
    tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_module, "ImageGraph", TransposeFirst)
    with pytest.raises(ExportError, match="only into a Cast"):
        export_bundle(request_from_checkpoint(checkpoint, "tiny", progress=False), tmp_path)
    assert versions(tmp_path, "tiny") == []


def test_damaged_bundles_are_refused_with_the_file_named(repository: Path) -> None:
    manifest = load_bundle(repository).manifest
    onnx_file = repository / manifest.text_encoder.file
    original = onnx_file.read_bytes()
    onnx_file.write_bytes(original + b"\0")
    with pytest.raises(BundleError, match=r"tiny_text/1/model\.onnx.*sha256"):
        load_bundle(repository)
    onnx_file.unlink()
    with pytest.raises(BundleError, match=r"tiny_text/1/model\.onnx is missing"):
        load_bundle(repository)
    onnx_file.write_bytes(original)
    load_bundle(repository)

    path = manifest_path(repository, "tiny", 1)
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, "schema_version": 99}))
    with pytest.raises(BundleError, match="schema_version 99"):
        load_bundle(repository)

    raw["text_encoder"]["inputs"][0]["name"] = "token_ids"
    path.write_text(json.dumps(raw))
    renamed = read_manifest(path)
    with pytest.raises(BundleError, match=r"tiny_text/1/model\.onnx has no input named 'token_ids'"):
        check_signature(repository / renamed.text_encoder.file, renamed.text_encoder)
    raw["text_encoder"]["inputs"][0]["name"] = "input_ids"
    raw["text_encoder"]["inputs"][0]["shape"] = [-1, 99]
    path.write_text(json.dumps(raw))
    reshaped = read_manifest(path)
    with pytest.raises(BundleError, match=r"input 'input_ids' is int64\[-1, 12\]"):
        check_signature(repository / reshaped.text_encoder.file, reshaped.text_encoder)


def test_cli_export_verify_promote(tmp_path: Path, checkpoint: Path) -> None:
    runner = CliRunner()
    repo = tmp_path / "repo"
    result = runner.invoke(app, ["export", str(checkpoint), "--name", "cli", "-r", str(repo)])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["verify", str(repo)]).exit_code == 0
    result = runner.invoke(app, ["export", str(checkpoint), "--name", "cli", "-r", str(repo), "--activate"])
    assert result.exit_code == 0 and active_version(repo, "cli") == 2
    assert runner.invoke(app, ["promote", "cli", "1", "-r", str(repo)]).exit_code == 0
    assert active_version(repo, "cli") == 1
    result = runner.invoke(app, ["promote", "cli", "2", "-r", str(repo), "--instance-kind", "cpu"])
    assert result.exit_code == 0 and active_version(repo, "cli") == 2
    assert "KIND_CPU" in (repo / "cli_image" / "config.pbtxt").read_text()
    refused = runner.invoke(
        app, ["promote", "cli", "1", "-r", str(repo), "--instance-kind", "cpu", "--tensorrt"]
    )
    assert refused.exit_code == 2 and "tensorrt" in refused.output and active_version(repo, "cli") == 2
    assert runner.invoke(app, ["promote", "cli", "1", "-r", str(repo)]).exit_code == 0
    shutil.rmtree(repo / "cli_text" / "1")
    failed = runner.invoke(app, ["verify", str(repo)])
    assert failed.exit_code == 2 and "missing" in failed.output
