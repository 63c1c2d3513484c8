"""Random parameter trees in the layout of Google's published LiT ``.npz`` checkpoints, at tiny sizes.

The layout follows vit_jax (``models_vit``, ``models_lit``) and flaxformer's BERT: ``img/`` a ViT with the
class token's position row inside ``Transformer/posembed_input``, pre-Linen module numbering
(``MultiHeadDotProductAttention_1``, ``LayerNorm_2``, ``MlpBlock_3``) unless ``linen``; ``txt/`` a BERT
(``BertEncoder_0``, 2-D kernels) or a ViT-style text transformer (``Embed_0``, ``pos_embedding``,
``Encoder_0``); ``t`` the log temperature.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Sizes:
    patch: int = 8
    image: int = 32
    width: int = 32
    depth: int = 2
    heads: int = 4
    mlp: int = 64
    image_head: int | None = 24  # LiT-B16B has an img/head; B16B_2 and the L16 models do not
    text_width: int = 32
    text_depth: int = 2
    text_heads: int = 4
    text_mlp: int = 64
    vocab: int = 400  # room for the vocabularies of tests/tokenizer_fixtures.py
    out: int = 24  # txt/head's output (equals the image features' width)
    context: int = 16


class Random:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, *shape: int, scale: float = 0.2) -> np.ndarray:
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def norm(self, width: int) -> tuple[np.ndarray, np.ndarray]:
        return 1 + self(width, scale=0.1), self(width, scale=0.1)


def _vit_block(w: dict, r: Random, at: str, width: int, heads: int, mlp: int, linen: bool) -> None:
    names = ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0")
    if not linen:
        names = ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3")
    ln1, attention, ln2, mlp_block = names
    for ln in (ln1, ln2):
        w[f"{at}/{ln}/scale"], w[f"{at}/{ln}/bias"] = r.norm(width)
    for name in ("query", "key", "value"):
        w[f"{at}/{attention}/{name}/kernel"] = r(width, heads, width // heads)
        w[f"{at}/{attention}/{name}/bias"] = r(heads, width // heads)
    w[f"{at}/{attention}/out/kernel"] = r(heads, width // heads, width)
    w[f"{at}/{attention}/out/bias"] = r(width)
    w[f"{at}/{mlp_block}/Dense_0/kernel"], w[f"{at}/{mlp_block}/Dense_0/bias"] = r(width, mlp), r(mlp)
    w[f"{at}/{mlp_block}/Dense_1/kernel"], w[f"{at}/{mlp_block}/Dense_1/bias"] = r(mlp, width), r(width)


def image_tree(s: Sizes, r: Random, linen: bool = False) -> dict[str, np.ndarray]:
    tokens = (s.image // s.patch) ** 2
    w = {
        "img/embedding/kernel": r(s.patch, s.patch, 3, s.width, scale=0.05),
        "img/embedding/bias": r(s.width),
        "img/cls": r(1, 1, s.width),
        "img/Transformer/posembed_input/pos_embedding": r(1, tokens + 1, s.width),
    }
    w["img/Transformer/encoder_norm/scale"], w["img/Transformer/encoder_norm/bias"] = r.norm(s.width)
    for i in range(s.depth):
        _vit_block(w, r, f"img/Transformer/encoderblock_{i}", s.width, s.heads, s.mlp, linen)
    if s.image_head is not None:
        w["img/head/kernel"], w["img/head/bias"] = r(s.width, s.image_head), r(s.image_head)
    return w


def bert_tree(s: Sizes, r: Random) -> dict[str, np.ndarray]:
    at, d = "txt/BertEncoder_0", s.text_width
    w = {
        f"{at}/embedder/embedders_token_ids/embedding": r(s.vocab, d),
        f"{at}/embedder/embedders_position_ids/embedding": r(64, d),
        f"{at}/embedder/embedders_segment_ids/embedding": r(2, d),
    }
    w[f"{at}/layer_norm/scale"], w[f"{at}/layer_norm/bias"] = r.norm(d)
    for i in range(s.text_depth):
        layer = f"{at}/encoder_block/layer_sequence/layers_{i}"
        for name in ("query", "key", "value"):
            w[f"{layer}/attention_block/attention_layer/{name}/kernel"] = r(d, d)
            w[f"{layer}/attention_block/attention_layer/{name}/bias"] = r(d)
        w[f"{layer}/attention_block/dense_layer/kernel"] = r(d, d)
        w[f"{layer}/attention_block/dense_layer/bias"] = r(d)
        w[f"{layer}/mlp_block/mlp/dense_layer/kernel"] = r(d, s.text_mlp)
        w[f"{layer}/mlp_block/mlp/dense_layer/bias"] = r(s.text_mlp)
        w[f"{layer}/mlp_block/dense_layer/kernel"] = r(s.text_mlp, d)
        w[f"{layer}/mlp_block/dense_layer/bias"] = r(d)
        for block in ("attention_block", "mlp_block"):
            w[f"{layer}/{block}/layer_norm/scale"], w[f"{layer}/{block}/layer_norm/bias"] = r.norm(d)
    w["txt/head/kernel"], w["txt/head/bias"] = r(d, s.out), r(s.out)
    return w


def vit_text_tree(s: Sizes, r: Random, linen: bool = False) -> dict[str, np.ndarray]:
    d = s.text_width
    w = {"txt/Embed_0/embedding": r(s.vocab, d), "txt/pos_embedding": r(1, s.context, d)}
    for i in range(s.text_depth):
        _vit_block(w, r, f"txt/Encoder_0/encoderblock_{i}", d, s.text_heads, s.text_mlp, linen)
    w["txt/Encoder_0/encoder_norm/scale"], w["txt/Encoder_0/encoder_norm/bias"] = r.norm(d)
    w["txt/head/kernel"], w["txt/head/bias"] = r(d, s.out), r(s.out)
    return w


def lit_tree(text: str, sizes: Sizes = Sizes(), seed: int = 0, linen: bool = False) -> dict[str, np.ndarray]:
    """A whole checkpoint: ``text`` is ``"bert"`` or ``"vit"``."""
    r = Random(seed)
    tower = bert_tree(sizes, r) if text == "bert" else vit_text_tree(sizes, r, linen)
    return {**image_tree(sizes, r, linen), **tower, "t": np.array([np.log(10.0)], np.float32)}


def write_tree(path: Path, tree: dict[str, np.ndarray]) -> Path:
    np.savez(path, **tree)
    return path
