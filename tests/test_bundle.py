"""Export a trained checkpoint as a bundle; verification, versions, promotion, pruning and damage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from typer.testing import CliRunner

from lit_bundle.manifest import BundleError, manifest_path, read_manifest
from lit_bundle.preprocess import resize_and_crop
from lit_bundle.repository import active_version, load_bundle, promote, prune, versions
from lit_bundle.signature import check_signature
from tests.helpers import TINY_IMAGE, tiny_config
from training import export as export_module
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
    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)  # deterministic tests
    tower = build_image_tower(ImageTowerConfig(**TINY_IMAGE), pretrained=False)
    weights = root / "tower.safetensors"
    save_file({k: v.contiguous() for k, v in tower.state_dict().items()}, str(weights))
    return train(tiny_config(root, weights, "steps=3"), progress=False).checkpoint


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


def test_fp16_export_has_its_own_tolerance(tmp_path: Path, checkpoint: Path) -> None:
    manifest = export_bundle(request_from_checkpoint(checkpoint, "half", progress=False), tmp_path, fp16=True)
    assert manifest.provenance["precision"] == "fp16"
    assert manifest.metrics["export_max_abs_diff_image"] <= export_module.FP16_TOLERANCE
    load_bundle(tmp_path, "half")


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
