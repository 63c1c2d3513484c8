"""The demo model committed in ``model_repository/`` verifies and still scores what its manifest says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from lit_bundle.preprocess import resize_and_crop
from lit_bundle.repository import CONFIG_FILE, load_bundle
from lit_bundle.signature import check_signature
from lit_bundle.triton import check_config
from training.data.synthetic import SyntheticWorld

REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"
MAX_BYTES = 25 * 1024 * 1024


def test_committed_repository_is_small_and_verifies() -> None:
    total = sum(p.stat().st_size for p in REPOSITORY.rglob("*") if p.is_file())
    assert total <= MAX_BYTES, f"model_repository/ holds {total / 1e6:.1f} MB, more than 25 MB"
    bundle = load_bundle(REPOSITORY, "lit_demo")
    for encoder in (bundle.manifest.image_encoder, bundle.manifest.text_encoder):
        check_signature(bundle.path(encoder.file), encoder)
        check_config((REPOSITORY / encoder.triton_name / CONFIG_FILE).read_text(), encoder)


def _embed_texts(session: ort.InferenceSession, tokenizer: Tokenizer, texts: list[str]) -> np.ndarray:
    encodings = tokenizer.encode_batch(texts)
    feed = {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }
    return session.run(None, feed)[0]


def test_heldout_accuracy_on_fresh_images_matches_the_manifest() -> None:
    bundle = load_bundle(REPOSITORY, "lit_demo")
    manifest = bundle.manifest
    world = SyntheticWorld(image_size=manifest.preprocess.size, seed=20261129)  # never seen in training
    heldout = set(world.heldout_classes)
    samples = [world.sample("eval", 64 * k + c) for k in range(16) for c in sorted(heldout)]  # 16 x 16
    assert len(samples) == 256 and {label for *_, label in samples} == heldout

    options = ort.SessionOptions()
    image_session = ort.InferenceSession(str(bundle.image_model), options, providers=["CPUExecutionProvider"])
    text_session = ort.InferenceSession(str(bundle.text_model), options, providers=["CPUExecutionProvider"])
    pixels = np.stack([np.asarray(resize_and_crop(img, manifest.preprocess)) for img, _, _ in samples])
    images = image_session.run(None, {"pixels": pixels})[0]

    tokenizer = Tokenizer.from_file(str(bundle.tokenizer))
    classes = []
    for name in world.class_names:  # prompt ensembling: mean of normalised template embeddings, renormalised
        embedded = _embed_texts(text_session, tokenizer, [t.replace("{}", name) for t in manifest.templates])
        mean = embedded.mean(axis=0)
        classes.append(mean / np.linalg.norm(mean))
    predictions = (images @ np.stack(classes).T).argmax(axis=1)
    accuracy = float(np.mean(predictions == np.array([label for *_, label in samples])))
    recorded = manifest.metrics["heldout_top1"]
    assert abs(accuracy - recorded) <= 0.03, f"fresh held-out top-1 {accuracy:.3f} vs manifest {recorded:.3f}"
    assert "seen_top1" in manifest.metrics
