"""Imported CLIP/SigLIP bundles score exactly as transformers does, on tiny random models saved locally."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE, Unigram

from lit_bundle.preprocess import PreprocessSpec, preprocess_image
from lit_bundle.repository import load_bundle
from tests.tokenizer_fixtures import train_spm
from training import importers
from training.export import image_batch
from training.importers import (
    GEMMA_VOCAB,
    LowercasedInputs,
    bundle_tokenizer,
    check_tokenizer,
    import_hf,
    preprocess_spec,
)
from training.tokenizer_files import read_spm

transformers = pytest.importorskip("transformers")

TEXTS = [
    "a photo of the red circle.",
    "A Photo Of A Blue Square!",
    "the circle",
    "a photo of the red circle and the blue square and the green star next to them",  # truncated
]
WORDS = ["photo", "of", "the", "circle", "red", "blue", "square"]


def _images() -> list[Image.Image]:
    """Smooth and noisy images of several sizes: resizing, cropping and squashing all happen."""
    rng = np.random.default_rng(7)
    images = []
    for h, w in [(32, 32), (48, 40), (40, 58), (100, 37)]:
        coarse = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
        images.append(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC))
    images.append(Image.fromarray(rng.integers(0, 256, (45, 61, 3), dtype=np.uint8)))
    return images


# -- tiny checkpoints ---------------------------------------------------------------------------


def _clip_tokenizer() -> transformers.CLIPTokenizer:
    """CLIP's own byte-level BPE pipeline over a tiny vocabulary: all bytes plus a few merged words."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab |= {c + "</w>": len(alphabet) + i for i, c in enumerate(alphabet)}
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:
            if (pieces[0], pieces[1]) not in merges:
                merges.append((pieces[0], pieces[1]))
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
            vocab.setdefault(pieces[0], len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return transformers.CLIPTokenizer(vocab=vocab, merges=merges)


def _siglip_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """A SentencePiece-style unigram tokenizer ending every text in ``</s>`` (SigLIP's pad token too)."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    pieces += [(f"▁{w}", -1.0) for w in ["a", *WORDS]]
    pieces += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz.!"]
    tok = Tokenizer(Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(Regex(r"\s+"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="</s>", pad_token="</s>", unk_token="<unk>"
    )


def _tiny(**extra: int) -> dict[str, int]:
    return {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        **extra,
    }


def _save_clip(folder: Path, legacy_eos: bool = False) -> Path:
    """``legacy_eos``: OpenAI's configs say eos_token_id=2, so transformers pools at the highest id."""
    tokenizer = _clip_tokenizer()
    eos = 2 if legacy_eos else tokenizer.eos_token_id
    config = transformers.CLIPConfig(
        text_config=_tiny(
            vocab_size=len(tokenizer),
            max_position_embeddings=20,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=_tiny(image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = transformers.CLIPModel(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # shortest edge 36 then a 32 crop: a crop_fraction below 1 is exercised.
    transformers.CLIPImageProcessor(
        size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(folder)
    return folder


def _save_siglip_model(folder: Path, **text: int) -> None:
    config = transformers.SiglipConfig(
        text_config=_tiny(max_position_embeddings=16, **text),
        vision_config=_tiny(image_size=32, patch_size=8),
    )
    torch.manual_seed(0)
    model = transformers.SiglipModel(config).eval()
    with torch.no_grad():  # SigLIP's init values: scale 10, bias -10 would saturate; keep both visible
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-2.5)
    model.save_pretrained(folder)
    transformers.SiglipImageProcessor(size={"height": 32, "width": 32}, resample=2).save_pretrained(folder)


def _save_siglip(folder: Path) -> Path:
    tokenizer = _siglip_tokenizer()
    _save_siglip_model(folder, vocab_size=len(tokenizer), pad_token_id=1, eos_token_id=1)
    tokenizer.save_pretrained(folder)
    return folder


def _save_siglip_spm(folder: Path) -> Path:
    """Google's SigLIP layout: a SentencePiece ``spiece.model`` for the slow ``SiglipTokenizer`` only."""
    spiece = train_spm(folder / "spiece.model", "unigram")
    tokenizer = transformers.SiglipTokenizer(vocab_file=str(spiece))
    tokenizer.save_pretrained(folder)
    _save_siglip_model(folder, vocab_size=tokenizer.vocab_size, pad_token_id=1, eos_token_id=1)
    assert not (folder / "tokenizer.json").exists()
    return folder


GEMMA_CONFIG = {
    "tokenizer_class": "GemmaTokenizer",  # as the hub's SigLIP 2 checkpoints say
    "add_bos_token": False,
    "add_eos_token": True,
    "padding_side": "right",
    **{f"{name}_token": f"<{name}>" for name in ("pad", "eos", "bos", "unk")},
}


def _save_siglip2(folder: Path) -> Path:
    """SigLIP 2 at a fixed resolution: a ``SiglipModel`` with Gemma's BPE ``tokenizer.model``."""
    spm_model = train_spm(folder / "tokenizer.model", "bpe")
    (folder / "tokenizer_config.json").write_text(json.dumps(GEMMA_CONFIG))
    vocab_size = len(read_spm(spm_model).pieces)
    _save_siglip_model(folder, vocab_size=vocab_size, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    return folder


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_siglip(tmp_path_factory.mktemp("siglip"))


@pytest.fixture(scope="module")
def imported(clip_dir: Path, siglip_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("models")
    import_hf(str(clip_dir), repository, "clip-tiny")
    import_hf(str(siglip_dir), repository, "siglip-tiny", templates=("{}",))
    return repository


# -- helpers ------------------------------------------------------------------------------------


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _bundle_scores(repository: Path, name: str, images: list[Image.Image], texts: list[str]):
    """Scores as serving computes them: ONNX embeddings, then the manifest's scale and bias."""
    bundle = load_bundle(repository, name)
    m = bundle.manifest
    tokenizer = Tokenizer.from_file(str(bundle.tokenizer))
    encodings = tokenizer.encode_batch(texts)
    ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
    mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
    img = _session(bundle.image_model).run(None, {"pixels": image_batch(images, m.preprocess)})[0]
    txt = _session(bundle.text_model).run(None, {"input_ids": ids, "attention_mask": mask})[0]
    scores = m.logit_scale * img @ txt.T + (m.logit_bias or 0.0)
    return m, scores, torch.from_numpy(ids), torch.from_numpy(mask)


def _pixels(images: list[Image.Image], spec: PreprocessSpec) -> torch.Tensor:
    return torch.from_numpy(np.stack([preprocess_image(im, spec) for im in images]))


# -- tests --------------------------------------------------------------------------------------


def _assert_clip_scores(repository: Path, name: str, source: Path) -> None:
    images = _images()
    m, scores, ids, mask = _bundle_scores(repository, name, images, TEXTS)
    assert (m.loss, m.logit_bias, m.text.context_length) == ("softmax", None, 20)
    assert m.preprocess.resize == "shortest" and m.preprocess.size == 32
    assert m.provenance["importer"] == "hf-clip" and m.provenance["source"] == str(source)
    model = transformers.CLIPModel.from_pretrained(source, dtype=torch.float32).eval()
    assert m.logit_scale == pytest.approx(model.logit_scale.exp().item())
    with torch.no_grad():
        logits = model(
            input_ids=ids, attention_mask=mask, pixel_values=_pixels(images, m.preprocess)
        ).logits_per_image
    np.testing.assert_allclose(scores, logits.numpy(), atol=1e-4)
    probs = torch.softmax(torch.from_numpy(scores), dim=1).numpy()
    np.testing.assert_allclose(probs, torch.softmax(logits, dim=1).numpy(), atol=1e-5)


def test_clip_bundle_scores_match_transformers(imported: Path, clip_dir: Path) -> None:
    _assert_clip_scores(imported, "clip-tiny", clip_dir)


def test_clip_with_legacy_eos_config(tmp_path: Path) -> None:
    source = _save_clip(tmp_path / "clip-legacy", legacy_eos=True)
    import_hf(str(source), tmp_path / "models", "clip-legacy")
    _assert_clip_scores(tmp_path / "models", "clip-legacy", source)


def test_siglip_bundle_scores_match_transformers(imported: Path, siglip_dir: Path) -> None:
    images = _images()
    m, scores, ids, _ = _bundle_scores(imported, "siglip-tiny", images, TEXTS)
    assert (m.loss, m.text.context_length, m.templates) == ("sigmoid", 16, ("{}",))
    assert m.preprocess.resize == "squash" and m.preprocess.interpolation == "bilinear"
    assert m.preprocess.mean == (0.5, 0.5, 0.5) and m.provenance["importer"] == "hf-siglip"
    assert (m.logit_scale, m.logit_bias) == (pytest.approx(10.0), pytest.approx(-2.5))
    model = transformers.SiglipModel.from_pretrained(siglip_dir, dtype=torch.float32).eval()
    with torch.no_grad():  # the reference usage: max-length padded ids, no attention mask
        logits = model(input_ids=ids, pixel_values=_pixels(images, m.preprocess)).logits_per_image
    np.testing.assert_allclose(scores, logits.numpy(), atol=1e-4)
    probs = 1.0 / (1.0 + np.exp(-scores))
    np.testing.assert_allclose(probs, torch.sigmoid(logits).numpy(), atol=1e-5)


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_bundle_tokenizer_matches_transformers(
    kind: str, imported: Path, clip_dir: Path, siglip_dir: Path
) -> None:
    source = clip_dir if kind == "clip" else siglip_dir
    bundle = load_bundle(imported, f"{kind}-tiny")
    length = bundle.manifest.text.context_length
    ours = [e.ids for e in Tokenizer.from_file(str(bundle.tokenizer)).encode_batch(TEXTS)]
    reference = transformers.AutoTokenizer.from_pretrained(source)
    theirs = reference(TEXTS, padding="max_length", max_length=length, truncation=True)["input_ids"]
    assert ours == theirs
    assert all(len(ids) == length for ids in ours)
    eos = reference.eos_token_id
    assert ours[-1][-1] == eos  # truncation keeps the end-of-text token (CLIP pools there)
    if kind == "clip":
        assert ours[0][0] == reference.bos_token_id


def test_clip_fixed_length_padding_keeps_features(imported: Path, clip_dir: Path) -> None:
    """CLIP pools at the EOS token under a causal mask: padding to the context length changes nothing."""
    bundle = load_bundle(imported, "clip-tiny")
    tokenizer = Tokenizer.from_file(str(bundle.tokenizer))
    texts = TEXTS[:3]
    encodings = tokenizer.encode_batch(texts)
    model = transformers.CLIPModel.from_pretrained(clip_dir, dtype=torch.float32).eval()
    reference = transformers.AutoTokenizer.from_pretrained(clip_dir)
    with torch.no_grad():
        padded = model.get_text_features(
            input_ids=torch.tensor([e.ids for e in encodings]),
            attention_mask=torch.tensor([e.attention_mask for e in encodings]),
        ).pooler_output
        longest = model.get_text_features(**reference(texts, padding=True, return_tensors="pt")).pooler_output
    torch.testing.assert_close(padded, longest, atol=1e-5, rtol=1e-5)


def _crop_offsets_agree(image: Image.Image, spec: PreprocessSpec) -> bool:
    """Whether transformers' floored centre-crop offset equals our rounded one (torchvision's rule)."""
    if spec.resize == "squash":
        return True
    short = math.floor(spec.size / spec.crop_fraction)
    width, height = image.size
    long = int(short * max(width, height) / min(width, height))
    return all(math.floor((n - spec.size) / 2) == round((n - spec.size) / 2) for n in (short, long))


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_preprocessing_matches_pil_processor(kind: str, clip_dir: Path, siglip_dir: Path) -> None:
    """Our Pillow preprocessing equals transformers' PIL-backend processor exactly.

    Two known differences are left out: transformers 5's default torchvision backend resizes tensors
    (a few grey levels apart), and where the centre crop starts half a pixel off, transformers floors
    the offset while we round it like torchvision's ``CenterCrop`` (OpenAI CLIP's own preprocessing).
    """
    source = clip_dir if kind == "clip" else siglip_dir
    processor = transformers.AutoImageProcessor.from_pretrained(source, backend="pil")
    spec = preprocess_spec(processor)
    images = [im for im in _images() if _crop_offsets_agree(im, spec)]
    assert len(images) >= 4
    theirs = np.asarray(processor(images=images, return_tensors="np")["pixel_values"])
    np.testing.assert_allclose(_pixels(images, spec).numpy(), theirs, atol=1e-5)


def test_preprocess_spec_mapping() -> None:
    clip = preprocess_spec(
        transformers.CLIPImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224})
    )
    assert (clip.size, clip.resize, clip.interpolation) == (224, "shortest", "bicubic")
    assert math.floor(224 / clip.crop_fraction) == 256
    assert clip.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    siglip = preprocess_spec(transformers.SiglipImageProcessor(size={"height": 384, "width": 384}))
    assert (siglip.size, siglip.resize, siglip.interpolation, siglip.std) == (
        384,
        "squash",
        "bicubic",
        (0.5, 0.5, 0.5),
    )
    with pytest.raises(ValueError, match="centre-crop"):
        preprocess_spec(transformers.CLIPImageProcessor(do_center_crop=False))
    with pytest.raises(ValueError, match="1/255"):
        preprocess_spec(transformers.SiglipImageProcessor(rescale_factor=1 / 127.5))


def test_siglip_without_fast_tokenizer_is_explained(tmp_path: Path) -> None:
    """Google's SigLIP checkpoints ship only spiece.model: say what is missing instead of a stack trace."""
    transformers.SiglipConfig().save_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "SiglipTokenizer"}')
    with pytest.raises(ValueError, match=r"no fast SigLIP tokenizer.*tokenizer\.json"):
        bundle_tokenizer(str(tmp_path), "siglip", 64)


def test_unsupported_model_type_is_refused(tmp_path: Path) -> None:
    transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path
    )
    with pytest.raises(ValueError, match=r"'bert'.*\['clip', 'siglip'\]"):
        import_hf(str(tmp_path), tmp_path / "models", "bert")


def test_text_sequence_axis_is_dynamic_only_where_padding_cannot_matter(imported: Path) -> None:
    """CLIP pools at its end-of-text token, so its text graph takes any length and the serving tokenizer
    pads each batch only to its longest prompt, with the same embeddings as full padding; SigLIP pools the
    last position, so its graph keeps the fixed context length."""
    clip = load_bundle(imported, "clip-tiny")
    assert [t.shape for t in clip.manifest.text_encoder.inputs] == [(-1, -1)] * 2
    texts = ["a dog", "a photo of a red circle."]
    trimmed, full = clip.load_tokenizer().encode_batch(texts), Tokenizer.from_file(str(clip.tokenizer))
    assert max(len(e.ids) for e in trimmed) < clip.manifest.text.context_length
    session = _session(clip.text_model)

    def embed(encodings) -> np.ndarray:
        feeds = {
            "input_ids": np.asarray([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.asarray([e.attention_mask for e in encodings], dtype=np.int64),
        }
        return session.run(None, feeds)[0]

    np.testing.assert_allclose(embed(trimmed), embed(full.encode_batch(texts)), atol=1e-5)

    siglip = load_bundle(imported, "siglip-tiny")
    length = siglip.manifest.text.context_length
    assert [t.shape for t in siglip.manifest.text_encoder.inputs] == [(-1, length)] * 2
    assert {len(e.ids) for e in siglip.load_tokenizer().encode_batch(texts)} == {length}


# -- SigLIP and SigLIP 2 from SentencePiece files ------------------------------------------------


@pytest.fixture(scope="module")
def spm_imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bundles of a SigLIP with only a ``spiece.model`` and a SigLIP 2 with only a ``tokenizer.model``."""
    pytest.importorskip("sentencepiece")  # the references: slow SiglipTokenizer, Gemma's from tokenizer.model
    repository = tmp_path_factory.mktemp("spm-models")
    sources = {
        "siglip-spm": _save_siglip_spm(tmp_path_factory.mktemp("siglip-spm")),
        "siglip2": _save_siglip2(tmp_path_factory.mktemp("siglip2")),
    }
    for name, source in sources.items():
        import_hf(str(source), repository, name)
    return {"repository": repository, **sources}


def _reference_tokenizer(name: str, source: Path) -> transformers.PreTrainedTokenizerBase:
    if name == "siglip2":  # transformers' SigLIP 2 tokenizer: Gemma's, lower-casing
        return transformers.Siglip2Tokenizer.from_pretrained(source, **GEMMA_CONFIG)
    return transformers.SiglipTokenizer.from_pretrained(source)


@pytest.mark.parametrize("name", ["siglip-spm", "siglip2"])
def test_siglip_from_sentencepiece_files_scores_match_transformers(
    name: str, spm_imported: dict[str, Path]
) -> None:
    """Tokenised by transformers' own tokenizer and scored by ``SiglipModel``: the same ids and scores."""
    source, images = spm_imported[name], _images()
    m, scores, ids, _ = _bundle_scores(spm_imported["repository"], name, images, TEXTS)
    assert (m.loss, m.text.context_length, m.provenance["importer"]) == ("sigmoid", 16, "hf-siglip")
    reference = _reference_tokenizer(name, source)
    theirs = reference(TEXTS, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    assert torch.equal(ids, theirs["input_ids"])
    model = transformers.SiglipModel.from_pretrained(source, dtype=torch.float32).eval()
    with torch.no_grad():
        pixels = _pixels(images, m.preprocess)
        logits = model(input_ids=theirs["input_ids"], pixel_values=pixels).logits_per_image
    np.testing.assert_allclose(scores, logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(1.0 / (1.0 + np.exp(-scores)), torch.sigmoid(logits).numpy(), atol=1e-5)


def test_siglip_spiece_model_needs_no_transformers_tokenizer(
    spm_imported: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``sentencepiece`` transformers cannot load ``SiglipTokenizer``; the bundle tokenizer is
    still built from ``spiece.model`` (unchecked, as there is nothing to check it against)."""

    def unavailable(source: str) -> None:
        raise ImportError("SiglipTokenizer requires the SentencePiece library but it was not found")

    monkeypatch.setattr(importers, "_hf_tokenizer", unavailable)
    tokenizer, reference = bundle_tokenizer(str(spm_imported["siglip-spm"]), "siglip", 16)
    assert reference is None
    bundle = load_bundle(spm_imported["repository"], "siglip-spm")
    saved = Tokenizer.from_file(str(bundle.tokenizer))
    assert [e.ids for e in tokenizer.encode_batch(TEXTS)] == [e.ids for e in saved.encode_batch(TEXTS)]


def test_siglip2_bundle_lowercases(spm_imported: dict[str, Path]) -> None:
    tokenizer = load_bundle(spm_imported["repository"], "siglip2").load_tokenizer()
    upper, lower = tokenizer.encode_batch(["A PHOTO OF THE RED CIRCLE", "a photo of the red circle"])
    assert upper.ids == lower.ids and upper.ids[-1] == 0  # padded with <pad>


def test_hub_gemma_tokenizer_json_of_a_siglip_gets_lowercased(tmp_path: Path) -> None:
    """SigLIP 2 FixRes on the hub: ``model_type`` siglip, Gemma's 256k tokenizer.json without lower-casing."""
    transformers.SiglipConfig().save_pretrained(tmp_path)
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    pieces = [*specials, "▁", *"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"]
    vocab = {piece: i for i, piece in enumerate(pieces)}
    vocab |= {f"<unused{i}>": i for i in range(len(vocab), GEMMA_VOCAB)}
    gemma = Tokenizer(BPE(vocab, [], unk_token="<unk>"))
    gemma.normalizer = normalizers.Replace(" ", "▁")
    gemma.add_special_tokens(specials)
    gemma.post_processor = processors.TemplateProcessing(single="$A <eos>", special_tokens=[("<eos>", 1)])
    gemma.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(GEMMA_CONFIG))
    tokenizer, reference = bundle_tokenizer(str(tmp_path), "siglip", 8)
    assert isinstance(reference, LowercasedInputs)  # transformers' GemmaTokenizer keeps case
    assert tokenizer.encode("Dog").ids == [4 + 4, 4 + 15, 4 + 7, 1, 0, 0, 0, 0]  # d o g <eos> <pad>...
    check_tokenizer(tokenizer, reference, ["A Dog", "a dog"], 8)
