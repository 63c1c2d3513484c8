"""``lit-train import-lit``: Google's LiT checkpoints, checked tower by tower against independent references.

Random trees in the published layout (tests/lit_trees.py) stand in for the real files, which are hundreds of
MB and need the internet. The image tower must equal timm's own loader of these ``.npz`` trees; the BERT
tower must equal ``transformers.BertModel`` filled by a mapping written here; the ViT-style text tower must
equal a NumPy forward pass written here from the tree with flax's semantics. Then a whole import is served
by a real gateway, whose ``/v1/classify`` must equal the torch towers with LiT's own preprocessing.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from harness.gateway import running_gateway
from lit_bundle.repository import load_bundle
from tests.lit_trees import Random, Sizes, image_tree, lit_tree, write_tree
from tests.tokenizer_fixtures import bert_vocab, train_spm
from training.cli import app
from training.import_lit import import_lit
from training.lit_npz import TreeError, linen_names, read_tree, vit_tower
from training.lit_npz_text import text_tower

LABELS = ["red circle", "blue square", "green star", "a dog", "two cats"]


def timm_reference(path: Path, sizes: Sizes, linen: bool) -> torch.nn.Module:
    """timm's ViT loaded by timm's own big_vision/vit_jax ``.npz`` loader."""
    import timm
    from timm.models.vision_transformer import _load_weights

    model = timm.create_model(
        "vit_base_patch16_224",
        pretrained=False,
        img_size=sizes.image,
        patch_size=sizes.patch,
        embed_dim=sizes.width,
        depth=sizes.depth,
        num_heads=sizes.heads,
        mlp_ratio=sizes.mlp / sizes.width,
        num_classes=sizes.image_head or 0,
        act_layer="gelu_tanh",  # flax's nn.gelu is the tanh approximation
    ).eval()
    source: Path | io.BytesIO = path
    if linen:  # timm reads Linen numbering only in big_vision's layout, with pos_embedding beside Transformer
        raw = dict(np.load(path))
        raw["img/pos_embedding"] = raw.pop("img/Transformer/posembed_input/pos_embedding")
        source = io.BytesIO()
        np.savez(source, **raw)
        source.seek(0)
    _load_weights(model, source, prefix="img/")
    return model


@pytest.mark.parametrize("linen", [False, True], ids=["pre-linen", "linen"])
@pytest.mark.parametrize("head", [24, None], ids=["with-head", "no-head"])
def test_image_tower_equals_timm_loader(tmp_path: Path, linen: bool, head: int | None) -> None:
    sizes = Sizes(image_head=head)
    path = write_tree(tmp_path / "lit.npz", lit_tree("bert", sizes, seed=1, linen=linen))
    pixels = torch.randn(3, 3, sizes.image, sizes.image)
    with torch.no_grad():
        ours = vit_tower(read_tree(path))(pixels)
        theirs = timm_reference(path, sizes, linen)(pixels)
    assert ours.shape == (3, head or sizes.width)
    assert (ours - theirs).abs().max().item() <= 1e-5


def test_big_vision_prefix_and_position_table_are_placed(tmp_path: Path) -> None:
    """big_vision writes ``params/`` and adds the position table before the class token (no row for it)."""
    sizes = Sizes(image_head=None)
    tree = image_tree(sizes, Random(3))
    table = tree.pop("img/Transformer/posembed_input/pos_embedding")
    tree["img/pos_embedding"] = table[:, 1:]
    path = write_tree(tmp_path / "bv.npz", {f"params/{k}": v for k, v in tree.items()})
    model = vit_tower(read_tree(path))
    assert torch.equal(model.pos_embed[0, 0], torch.zeros(sizes.width))
    assert np.array_equal(model.pos_embed[0, 1:].detach().numpy(), table[0, 1:])


def test_linen_renumbering_is_flax_s() -> None:
    names = linen_names({"a/LayerNorm_0/s": 0, "a/MultiHeadDotProductAttention_1/s": 1, "a/LayerNorm_2/s": 2,
                         "a/MlpBlock_3/Dense_10/k": 3, "a/MlpBlock_3/Dense_2/k": 4})  # fmt: skip
    assert names == {"a/LayerNorm_0/s": 0, "a/MultiHeadDotProductAttention_0/s": 1, "a/LayerNorm_1/s": 2,
                     "a/MlpBlock_0/Dense_1/k": 3, "a/MlpBlock_0/Dense_0/k": 4}  # fmt: skip


# -- text towers --------------------------------------------------------------------------------------


def token_batch(vocab: int, length: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Ids with LiT's padding (id 0) after a few tokens, and the mask ``ids != 0``."""
    rng = np.random.default_rng(5)
    ids = rng.integers(1, vocab, (4, length))
    for row, used in enumerate((3, 7, 16, 1)):
        ids[row, used:] = 0
    return ids, (ids != 0).astype(np.int64)


def bert_by_hand(
    tree: dict[str, np.ndarray], sizes: Sizes
) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """``BertModel`` filled from the tree by a mapping written here, not the importer's."""
    from transformers import BertConfig, BertModel

    d, at = sizes.text_width, "txt/BertEncoder_0/"
    config = BertConfig(
        vocab_size=sizes.vocab, hidden_size=d, num_hidden_layers=sizes.text_depth, num_attention_heads=2,
        intermediate_size=sizes.text_mlp, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-12,
        max_position_embeddings=64, type_vocab_size=2,
    )  # fmt: skip
    emb = at + "embedder/embedders_"
    state = {
        "embeddings.word_embeddings.weight": tree[emb + "token_ids/embedding"],
        "embeddings.position_embeddings.weight": tree[emb + "position_ids/embedding"],
        "embeddings.token_type_embeddings.weight": tree[emb + "segment_ids/embedding"],
        "embeddings.LayerNorm.weight": tree[at + "layer_norm/scale"],
        "embeddings.LayerNorm.bias": tree[at + "layer_norm/bias"],
    }
    for i in range(sizes.text_depth):
        f, h = f"{at}encoder_block/layer_sequence/layers_{i}/", f"encoder.layer.{i}."
        for n in ("query", "key", "value"):
            state[f"{h}attention.self.{n}.weight"] = tree[f"{f}attention_block/attention_layer/{n}/kernel"].T
            state[f"{h}attention.self.{n}.bias"] = tree[f"{f}attention_block/attention_layer/{n}/bias"]
        pairs = {
            "attention.output.dense": "attention_block/dense_layer",
            "intermediate.dense": "mlp_block/mlp/dense_layer",
            "output.dense": "mlp_block/dense_layer",
        }
        for hf, flax in pairs.items():
            state[f"{h}{hf}.weight"], state[f"{h}{hf}.bias"] = (
                tree[f"{f}{flax}/kernel"].T,
                tree[f"{f}{flax}/bias"],
            )
        for hf, flax in {
            "attention.output.LayerNorm": "attention_block",
            "output.LayerNorm": "mlp_block",
        }.items():
            state[f"{h}{hf}.weight"] = tree[f"{f}{flax}/layer_norm/scale"]
            state[f"{h}{hf}.bias"] = tree[f"{f}{flax}/layer_norm/bias"]
    model = BertModel(config, add_pooling_layer=False).eval()
    model.load_state_dict(
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=True
    )
    return model, torch.from_numpy(tree["txt/head/kernel"]), torch.from_numpy(tree["txt/head/bias"])


def test_bert_tower_equals_bert_model(tmp_path: Path) -> None:
    sizes = Sizes(text_width=128)  # two heads of 64, as every published BERT has heads of 64
    tree = read_tree(write_tree(tmp_path / "bert.npz", lit_tree("bert", sizes, seed=2)))
    ids, mask = token_batch(sizes.vocab)
    bert, kernel, bias = bert_by_hand(tree, sizes)
    with torch.no_grad():
        ours = text_tower(tree)(torch.from_numpy(ids), torch.from_numpy(mask))
        hidden = bert(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)
        ).last_hidden_state
        theirs = hidden[:, 0] @ kernel + bias
    assert (ours - theirs).abs().max().item() <= 1e-5


def _layer_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-6) * scale + bias


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def vit_text_numpy(tree: dict[str, np.ndarray], ids: np.ndarray, depth: int) -> np.ndarray:
    """vit_jax's ``TextTransformer`` in NumPy (float64): no mask, pre-LN blocks, the last token, the head."""
    w = {k: v.astype(np.float64) for k, v in tree.items()}
    x = w["txt/Embed_0/embedding"][ids] + w["txt/pos_embedding"]
    for i in range(depth):
        b = f"txt/Encoder_0/encoderblock_{i}/"
        a = b + "MultiHeadDotProductAttention_0/"
        y = _layer_norm(x, w[b + "LayerNorm_0/scale"], w[b + "LayerNorm_0/bias"])
        q, k, v = (
            np.einsum("btd,dhk->bthk", y, w[f"{a}{n}/kernel"]) + w[f"{a}{n}/bias"]
            for n in ("query", "key", "value")
        )
        logits = np.einsum("bqhk,bthk->bhqt", q / np.sqrt(q.shape[-1]), k)
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        x = x + np.einsum("bhqt,bthk,hkd->bqd", weights, v, w[a + "out/kernel"]) + w[a + "out/bias"]
        y = _layer_norm(x, w[b + "LayerNorm_1/scale"], w[b + "LayerNorm_1/bias"])
        hidden = _gelu_tanh(y @ w[b + "MlpBlock_0/Dense_0/kernel"] + w[b + "MlpBlock_0/Dense_0/bias"])
        x = x + hidden @ w[b + "MlpBlock_0/Dense_1/kernel"] + w[b + "MlpBlock_0/Dense_1/bias"]
    x = _layer_norm(x, w["txt/Encoder_0/encoder_norm/scale"], w["txt/Encoder_0/encoder_norm/bias"])
    return x[:, -1] @ w["txt/head/kernel"] + w["txt/head/bias"]


@pytest.mark.parametrize("linen", [False, True], ids=["pre-linen", "linen"])
def test_vit_text_tower_equals_numpy_forward(tmp_path: Path, linen: bool) -> None:
    sizes = Sizes()
    tree = read_tree(write_tree(tmp_path / "vit.npz", lit_tree("vit", sizes, seed=4, linen=linen)))
    ids, mask = token_batch(sizes.vocab, sizes.context)
    with torch.no_grad():
        ours = text_tower(tree)(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    assert np.abs(ours - vit_text_numpy(tree, ids, sizes.text_depth)).max() <= 1e-5


def test_an_unknown_tree_names_the_key_it_could_not_place(tmp_path: Path) -> None:
    tree = lit_tree("bert")
    tree = {k.replace("txt/BertEncoder_0", "txt/Roberta_0"): v for k, v in tree.items()}
    with pytest.raises(TreeError, match="first key is 'txt/Roberta_0/"):
        text_tower(read_tree(write_tree(tmp_path / "odd.npz", tree)))
    with pytest.raises(TreeError, match="img/embedding/kernel"):
        vit_tower({})
    extra = {**lit_tree("vit"), "img/MAPHead_0/probe": np.zeros((1, 1, 32), np.float32)}
    vocabulary = train_spm(tmp_path / "v.model", "unigram")
    with pytest.raises(TreeError, match="the first 'img/MAPHead_0/probe'"):
        import_lit(write_tree(tmp_path / "extra.npz", extra), vocabulary, tmp_path / "repo", "odd")


# -- a whole import, served --------------------------------------------------------------------------


def wide_picture() -> Image.Image:
    """3:1, its outer thirds unlike its middle: a centre crop would change what the model sees."""
    rng = np.random.default_rng(9)
    array = np.zeros((40, 120, 3), np.uint8)
    array[:, :40] = (230, 20, 20)
    array[:, 40:80] = rng.integers(0, 255, (40, 40, 3))
    array[:, 80:] = (20, 20, 230)
    return Image.fromarray(array)


def torch_scores(
    tree: dict[str, np.ndarray], images: list[Image.Image], tokens: tuple, size: int
) -> np.ndarray:
    """The towers on LiT's preprocessing, written out: squash to ``size`` bilinear, ``x / 127.5 - 1``."""
    pixels = np.stack([np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR)) for im in images])
    x = torch.from_numpy(pixels.astype(np.float32) / 127.5 - 1).permute(0, 3, 1, 2)
    with torch.no_grad():
        image = torch.nn.functional.normalize(vit_tower(tree)(x), dim=-1)
        text = torch.nn.functional.normalize(text_tower(tree)(*map(torch.from_numpy, tokens)), dim=-1)
    logits = float(np.exp(tree["t"][0])) * image @ text.T
    return torch.softmax(logits, dim=-1).numpy()


@pytest.mark.parametrize("text", ["bert", "vit"])
def test_an_imported_lit_model_serves_like_its_torch_towers(tmp_path: Path, text: str) -> None:
    sizes = Sizes(text_width=128) if text == "bert" else Sizes()
    path = write_tree(tmp_path / f"LiT-{text}.npz", lit_tree(text, sizes, seed=6))
    vocabulary = (
        bert_vocab(tmp_path / "v.txt") if text == "bert" else train_spm(tmp_path / "v.model", "unigram")
    )
    repository = tmp_path / "repo"
    manifest = import_lit(path, vocabulary, repository, "lit_tiny", templates=("{}",))
    assert manifest.preprocess.resize == "squash" and manifest.preprocess.interpolation == "bilinear"
    assert manifest.preprocess.mean == (0.5, 0.5, 0.5) and manifest.text.context_length == 16
    assert manifest.provenance["checkpoint_sha256"] and manifest.loss == "softmax"
    tokenizer = load_bundle(repository, "lit_tiny").load_tokenizer()
    encodings = tokenizer.encode_batch(LABELS)
    tokens = (np.array([e.ids for e in encodings]), np.array([e.attention_mask for e in encodings]))
    pictures = [wide_picture(), Image.new("RGB", (50, 70), (10, 200, 40))]
    expected = torch_scores(read_tree(path), pictures, tokens, sizes.image)
    cropped = torch_scores(read_tree(path), [pictures[0].crop((40, 0, 80, 40))], tokens, sizes.image)
    assert np.abs(cropped[0] - expected[0]).max() > 1e-3  # the picture tells a crop from a squash
    blobs = []
    for picture in pictures:
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        blobs.append(base64.b64encode(buffer.getvalue()).decode())
    with running_gateway(tmp_path, LIT_REPOSITORY=str(repository)) as url:
        body = {"images": blobs, "labels": LABELS, "templates": ["{}"]}
        answer = httpx.post(f"{url}/v1/classify", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    for row, result in zip(expected, answer.json()["results"], strict=True):
        got = {p["label"]: p["score"] for p in result["predictions"]}
        assert max(abs(got[label] - float(p)) for label, p in zip(LABELS, row, strict=True)) <= 1e-5


def test_the_command_imports_with_the_paper_s_templates(tmp_path: Path) -> None:
    path = write_tree(tmp_path / "LiT-tiny.npz", lit_tree("vit", seed=7))
    vocabulary = train_spm(tmp_path / "LiT-tiny.model", "unigram")
    repository = tmp_path / "repo"
    args = [
        "import-lit",
        str(path),
        "--tokenizer",
        str(vocabulary),
        "--name",
        "lit_tiny",
        "-r",
        str(repository),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads(next(repository.glob("lit_tiny_image/*/manifest.json")).read_text())
    assert len(manifest["templates"]) == 80 and manifest["provenance"]["importer"] == "lit-npz-vit"
    wrong = CliRunner().invoke(app, [*args[:3], str(tmp_path / "vocab.json"), *args[4:]])
    assert wrong.exit_code != 0 and ".txt" in wrong.output and ".model" in wrong.output
