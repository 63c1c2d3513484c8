"""The README's real-photo recipe, tiny: train on real photos, evaluate, export, serve, classify, retrain.

No synthetic data anywhere: the photos are scikit-image's sample photographs (``scripts/photo_set.py``),
the locked image tower is a timm ResNet whose weights come from a local file (a stand-in for the hub
ViT of ``training/configs/photos.yaml``), the text tower is trained from scratch on the captions.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from tokenizers import Tokenizer
from typer.testing import CliRunner

from harness.gateway import ROOT, running_gateway
from lit_bundle.manifest import read_manifest
from lit_bundle.preprocess import resize_and_crop
from lit_bundle.repository import active_version, load_bundle, manifest_path, versions
from training.cli import app
from training.data.pairs import ManifestPairs
from training.data.split import in_split
from training.encoders import TorchEncoders
from training.evaluate import build_classifier
from training.export_checkpoint import logit_scale_and_bias
from training.factory import load_trained

CONFIG = ROOT / "training" / "configs" / "photos.yaml"
NAME = "photos"


def flat(output: str) -> str:
    return " ".join(output.split())


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@dataclass(frozen=True)
class Photos:
    root: Path
    tower: Path

    @property
    def eval_set(self) -> Path:
        return self.root / "eval"

    @property
    def classes(self) -> Path:
        return self.root / "classes.txt"

    def overrides(self, out: Path, *extra: str) -> list[str]:
        """photos.yaml, tiny: a small timm tower from a local file, a small text tower, few steps."""
        return [
            f"data.path={self.root / 'train.csv'}",
            f"evaluation.zero_shot={self.eval_set}",
            f"evaluation.classes={self.classes}",
            "model.image.name=resnet10t",
            f"model.image.weights={self.tower}",
            "model.embed_dim=64",
            "model.text.width=64",
            "model.text.layers=1",
            "model.text.heads=2",
            "steps=40",
            "checkpoint_every=0",
            f"out_dir={out}",
            f"cache_dir={self.root.parent / 'cache'}",
            *extra,
        ]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Photos:
    import timm

    base = tmp_path_factory.mktemp("photos")
    script = ROOT / "scripts" / "photo_set.py"
    subprocess.run([sys.executable, str(script), str(base / "photos")], check=True, timeout=120)
    torch.manual_seed(0)
    tower = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    weights = base / "resnet10t.safetensors"
    save_file({k: v.contiguous() for k, v in tower.state_dict().items()}, str(weights))
    return Photos(base / "photos", weights)


@dataclass(frozen=True)
class Chain:
    photos: Photos
    run: Path
    checkpoint: Path
    repository: Path


@pytest.fixture(scope="module")
def chain(photos: Photos, tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """lit-train train, then lit-train export, on the manifest."""
    base = tmp_path_factory.mktemp("chain")
    run = base / "run"
    invoke("train", "-c", CONFIG, "-q", *photos.overrides(run, "eval_every=20"))
    checkpoint = next(run.glob("step-*"))
    invoke("export", run, "--name", NAME, "-r", base / "repository")
    return Chain(photos, run, checkpoint, base / "repository")


def test_training_leaves_the_held_out_split_out(chain: Chain) -> None:
    manifest = chain.photos.root / "train.csv"
    everything = ManifestPairs(manifest)
    heldout = ManifestPairs(manifest, split="heldout", holdout=0.1)
    train = ManifestPairs(manifest, split="train", holdout=0.1)
    assert 0 < len(heldout) < len(everything) and len(heldout) + len(train) == len(everything)
    assert all(in_split(r.image, "heldout", 0.1) for r in heldout.records)
    meta = json.loads(next((chain.photos.root.parent / "cache").glob("*/meta.json")).read_text())
    assert meta["count"] == len(train), "the feature cache (what training read) holds only the train split"


def test_training_evaluates_every_eval_every_steps(chain: Chain) -> None:
    history = json.loads((chain.run / "history.json").read_text())
    evaluated = [entry for entry in history if "top1" in entry]
    assert [entry["step"] for entry in evaluated] == [20]  # never at the last step (40)
    assert {"i2t_r1", "t2i_r1"} <= set(evaluated[0])


def test_evaluate_writes_the_report_on_the_users_data(chain: Chain, tmp_path: Path) -> None:
    output = flat(invoke("evaluate", chain.run, "--out", tmp_path, "-q"))
    assert "zero_shot:" in output and "retrieval:" in output
    report = json.loads((tmp_path / "report.json").read_text())
    metrics = report["metrics"]
    assert {"top1", "top5", "i2t_r1", "t2i_r1", "i2t_r10", "t2i_r10"} <= set(metrics)
    assert metrics["eval_images"] == 32
    kinds = {d["kind"]: d for d in report["data"]}
    assert kinds["zero_shot"]["images"] == 32 and kinds["zero_shot"]["texts"] == 16
    assert kinds["retrieval"]["split"] == "heldout" and kinds["retrieval"]["images"] >= 1
    assert report["class_names"][:2] == ["astronaut", "cat"]  # prompt names from the class file
    assert len(report["confusion"]) == 16 and sum(map(sum, report["confusion"])) == 32
    assert (tmp_path / "confusion.png").stat().st_size > 0 and (tmp_path / "report.md").is_file()


def test_export_records_the_metrics_and_their_data(chain: Chain) -> None:
    bundle = load_bundle(chain.repository, NAME)
    m = bundle.manifest
    assert {"top1", "i2t_r1", "export_max_abs_diff_image"} <= set(m.metrics)
    records = {d.kind: d for d in m.evaluation}
    assert set(records) == {"zero_shot", "retrieval"}
    assert records["zero_shot"].source == str(chain.photos.eval_set)
    assert records["zero_shot"].images == 32 and len(records["zero_shot"].sha256) == 64
    assert records["retrieval"].split == "heldout" and set(records["retrieval"].metrics) >= {"i2t_r1"}
    assert "zero-shot set" in m.provenance["check_images"]
    assert m.provenance["data"].startswith("manifest ") and "held-out fraction 0.1" in m.provenance["data"]


def _numpy_zero_shot(repository: Path, eval_set: Path, classes: Path) -> tuple[np.ndarray, np.ndarray]:
    """The test's own scoring: ONNX embeddings, prompt ensembling and argmax in NumPy."""
    manifest = read_manifest(manifest_path(repository, NAME, active_version(repository, NAME)))
    image = ort.InferenceSession(str(repository / manifest.image_encoder.file))
    text = ort.InferenceSession(str(repository / manifest.text_encoder.file))
    tokenizer = Tokenizer.from_file(str(repository / manifest.text.tokenizer))  # fixed-length padding
    folders, names = zip(*(line.split("\t") for line in classes.read_text().splitlines()), strict=True)
    paths, labels = [], []
    for label, folder in enumerate(folders):
        for path in sorted((eval_set / folder).glob("*.jpg")):
            paths.append(path)
            labels.append(label)
    pixels = []
    for path in paths:
        with Image.open(path) as im:  # the served preprocessing (its parity with training is tested apart)
            pixels.append(np.asarray(resize_and_crop(im.convert("RGB"), manifest.preprocess), dtype=np.uint8))
    images = image.run(None, {"pixels": np.stack(pixels)})[0]
    class_rows = []
    for name in names:
        encodings = tokenizer.encode_batch([t.replace("{}", name) for t in manifest.templates])
        feeds = {
            "input_ids": np.asarray([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.asarray([e.attention_mask for e in encodings], dtype=np.int64),
        }
        emb = text.run(None, feeds)[0]
        mean = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).mean(axis=0)
        class_rows.append(mean / np.linalg.norm(mean))
    return (images @ np.stack(class_rows).T).argmax(axis=1), np.asarray(labels)


def test_bundle_zero_shot_equals_an_independent_numpy_computation(chain: Chain, tmp_path: Path) -> None:
    photos = chain.photos
    predicted, labels = _numpy_zero_shot(chain.repository, photos.eval_set, photos.classes)
    invoke(
        "evaluate", chain.repository, "--name", NAME, "--eval-set", photos.eval_set,
        "--classes", photos.classes, "--out", tmp_path, "-q",
    )  # fmt: skip
    report = json.loads((tmp_path / "report.json").read_text())
    expected = np.zeros((16, 16), dtype=int)
    np.add.at(expected, (labels, predicted), 1)
    assert np.array_equal(np.asarray(report["confusion"]), expected)  # every image's top-1, not just the rate
    assert report["metrics"]["top1"] == pytest.approx(float((predicted == labels).mean()), abs=1e-12)
    assert 0 < report["metrics"]["top1"] < 1  # a real model: neither collapsed nor trivially perfect


def _torch_probabilities(
    checkpoint: Path, photo: Path, labels: list[str], templates: list[str]
) -> np.ndarray:
    model, _ = load_trained(checkpoint)
    encoders = TorchEncoders(model)
    with Image.open(photo) as im:
        image = encoders.encode_images([im.convert("RGB")])
    classifier = build_classifier(encoders.encode_texts, labels, templates, progress=False)
    scale, _ = logit_scale_and_bias(model)
    return torch.softmax(scale * image @ classifier.T, dim=-1)[0].numpy()


def test_the_served_answer_equals_the_torch_model_then_retraining_gates_both_ways(
    chain: Chain, tmp_path: Path
) -> None:
    photos, repository = chain.photos, chain.repository
    names = [line.split("\t")[1] for line in photos.classes.read_text().splitlines()]
    photo = photos.eval_set / "cat" / "0.jpg"
    templates = list(load_bundle(repository, NAME).manifest.templates)
    expected = _torch_probabilities(chain.checkpoint, photo, names, templates)
    with running_gateway(tmp_path, LIT_REPOSITORY=str(repository), LIT_MODEL_POLL_S="0.5") as url:
        files = [("images", ("cat.jpg", photo.read_bytes(), "image/jpeg"))]
        response = httpx.post(f"{url}/v1/classify", data={"labels": names}, files=files, timeout=60)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == {"name": NAME, "version": 1}
        served = {p["label"]: p["score"] for p in body["results"][0]["predictions"]}
        assert np.abs(np.asarray([served[n] for n in names]) - expected).max() <= 1e-5

        # retraining on the same data: a passing gate promotes v2, and the running gateway follows
        passed = CliRunner().invoke(
            app,
            [
                "retrain", "-c", str(CONFIG), "--repository", str(repository), "--name", NAME,
                "--eval-set", str(photos.eval_set), "--classes", str(photos.classes),
                "--min-accuracy", "0", "--max-regression", "1", "--out", str(tmp_path / "pass"), "-q",
                *photos.overrides(tmp_path / "unused"),
            ],
        )  # fmt: skip
        assert passed.exit_code == 0, passed.output + repr(passed.exception)
        assert active_version(repository, NAME) == 2
        report = json.loads((tmp_path / "pass" / "report" / "retrain.json").read_text())
        assert report["gate_metric"] == "top1" and report["decision"] == "promoted"
        assert report["previous_version"] == 1 and set(report["previous"]) == set(report["candidate"])
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/v1/models", timeout=5).json()["version"] != 2:
            assert time.monotonic() < deadline, "the gateway did not follow the promotion"
            time.sleep(0.2)

    # a gate the candidate cannot pass: nothing is promoted, exit code 1
    failed = CliRunner().invoke(
        app,
        [
            "retrain", "-c", str(CONFIG), "--repository", str(repository), "--name", NAME,
            "--eval-set", str(photos.eval_set), "--classes", str(photos.classes),
            "--min-accuracy", "1.01", "--out", str(tmp_path / "fail"), "-q",
            *photos.overrides(tmp_path / "unused"),
        ],
    )  # fmt: skip
    assert failed.exit_code == 1, failed.output
    assert "gate failed: nothing promoted" in flat(failed.output)
    assert active_version(repository, NAME) == 2 and versions(repository, NAME) == [1, 2]
    rejected = json.loads((tmp_path / "fail" / "report" / "retrain.json").read_text())
    assert [c["name"] for c in rejected["checks"] if not c["passed"]] == ["min_accuracy"]


def test_retraining_on_own_data_needs_a_named_evaluation_set(photos: Photos, tmp_path: Path) -> None:
    overrides = [o for o in photos.overrides(tmp_path / "run") if not o.startswith("evaluation.")]
    result = CliRunner().invoke(
        app,
        [
            "retrain", "-c", str(CONFIG), "--repository", str(tmp_path / "repo"),
            "--out", str(tmp_path / "o"), "-q",
            *overrides, "evaluation.zero_shot=null", "evaluation.classes=null",
        ],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "pass --eval-set DIR" in flat(result.output)
    assert not (tmp_path / "repo").exists()


def test_the_chain_on_webdataset_shards(photos: Photos, tmp_path: Path) -> None:
    """The same chain on WebDataset shards, named by a shard-list file: train, evaluate, export, retrain."""
    shard_list = tmp_path / "shards.txt"
    shard_list.write_text(
        "# the photo set's shards\n" + f"{photos.root / 'shards' / 'photos-{000000..000002}.tar'}\n"
    )
    shards = ["data.kind=webdataset", f"data.path={shard_list}", f"cache_dir={tmp_path / 'cache'}"]
    run, repository = tmp_path / "run", tmp_path / "repository"
    invoke("train", "-c", CONFIG, "-q", *photos.overrides(run), *shards)

    invoke("evaluate", run, "--out", tmp_path / "report", "-q")
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    retrieval = next(d for d in report["data"] if d["kind"] == "retrieval")
    assert retrieval["source"] == str(shard_list) and retrieval["split"] == "heldout"
    assert 1 <= retrieval["images"] < 64 and retrieval["texts"] == retrieval["images"]
    cache = json.loads(next((tmp_path / "cache").glob("*/meta.json")).read_text())
    assert cache["count"] + retrieval["images"] == 64, "training read exactly the samples not held out"

    invoke("export", run, "--name", NAME, "-r", repository)
    manifest = load_bundle(repository, NAME).manifest
    assert manifest.provenance["data"].startswith(f"webdataset {shard_list}")
    assert {d.kind for d in manifest.evaluation} == {"zero_shot", "retrieval"}

    result = CliRunner().invoke(
        app,
        [
            "retrain", "-c", str(CONFIG), "--repository", str(repository), "--name", NAME,
            "--eval-set", str(photos.eval_set), "--classes", str(photos.classes), "--min-accuracy", "0",
            "--max-regression", "1", "--out", str(tmp_path / "retrain"), "-q",
            *photos.overrides(tmp_path / "unused"), *shards,
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert active_version(repository, NAME) == 2


def test_without_evaluation_data_the_refusals_say_what_to_give(photos: Photos, tmp_path: Path) -> None:
    run = tmp_path / "run"
    bare = ["data.holdout=0", "evaluation.zero_shot=null", "evaluation.classes=null", "steps=2"]
    invoke("train", "-c", CONFIG, "-q", *photos.overrides(run), *bare)
    runner = CliRunner()

    evaluated = runner.invoke(app, ["evaluate", str(run), "-q"])
    assert evaluated.exit_code == 2
    assert "pass --eval-set DIR" in flat(evaluated.output) and "data.holdout > 0" in flat(evaluated.output)

    repository = tmp_path / "repository"
    refused = runner.invoke(app, ["export", str(run), "--name", NAME, "-r", str(repository)])
    assert refused.exit_code == 2 and "no check images: pass --check-images DIR" in flat(refused.output)
    assert not repository.exists()

    folder = photos.eval_set / "rocket"
    invoke("export", run, "--name", NAME, "-r", repository, "--check-images", folder)
    manifest = load_bundle(repository, NAME).manifest
    assert manifest.provenance["check_images"] == f"--check-images {folder}"
    assert manifest.evaluation == () and "export_max_abs_diff_image" in manifest.metrics
