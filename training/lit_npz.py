"""Google's published LiT checkpoints (``.npz`` parameter trees) as PyTorch towers.

The files (LiT-B16B, LiT-B16B_2, LiT-L16L, LiT-L16S, LiT-L16Ti) are flat ``np.savez`` archives with
``/``-separated keys: ``img/...`` a vit_jax ViT (pre-LN, tanh GELU, LayerNorm eps 1e-6, class-token pooling,
an optional linear ``head``), ``txt/...`` either a flaxformer BERT (``txt/BertEncoder_0``: post-LN, eps
1e-12, CLS pooling, 2-D kernels) or a ViT-style text transformer (``txt/Embed_0``: no attention mask, the
last position pooled), each with a ``txt/head``, and ``t`` the log temperature. Every size is read from the
array shapes, so smaller trees of the same structure load too. Flax numbers sibling modules two ways
(``MultiHeadDotProductAttention_1``/``MlpBlock_3`` before Linen, ``_0`` after); both are accepted, as are
big_vision's ``params/`` prefix and its ``pos_embedding`` beside (not inside) ``Transformer``.

The towers are timm's ``VisionTransformer`` and transformers' ``BertModel`` and ``SiglipTextModel`` (which
is exactly the ViT-style text tower: last-token pooling and a linear head), filled by explicit mappings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

Tree = dict[str, np.ndarray]
_PREFIXES = ("params/", "opt/target/")
_NUMBERED = re.compile(r"^(.*)_(\d+)$")
QKV = ("query", "key", "value")
BERT_HEAD_DIM = 64  # flaxformer's BERT configs: 2-D kernels do not record the heads, their width is 64


class TreeError(ValueError):
    """The file is not a LiT parameter tree we can place."""


class TrackedTree(dict[str, np.ndarray]):
    """A tree that remembers which arrays were read, so that an array no tower takes is an error (a layout
    we do not know) rather than a weight silently left out."""

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        super().__init__(arrays)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> np.ndarray:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        if key in self:
            self.read.add(key)
        return super().get(key, default)

    def check_all_placed(self) -> None:
        unplaced = sorted(set(self) - self.read, key=_natural)
        if unplaced:
            raise TreeError(
                f"{len(unplaced)} arrays of the tree fit no part of a LiT model, the first {unplaced[0]!r}: "
                "this is not a layout the importer knows (LiT's vit_jax or big_vision trees)"
            )


def read_tree(path: Path) -> TrackedTree:
    """The archive's arrays under normalised keys (no prefix, Linen numbering), as float32."""
    with np.load(path, allow_pickle=False) as archive:
        keys = list(archive.files)
        prefix = next((p for p in _PREFIXES if keys and all(k.startswith(p) for k in keys)), "")
        tree = {k.removeprefix(prefix): np.asarray(archive[k], dtype=np.float32) for k in keys}
    return TrackedTree(linen_names(tree))


def linen_names(tree: Mapping[str, np.ndarray]) -> Tree:
    """Renumber ``Name_N`` siblings per class and level as flax's ``convert_pre_linen`` does: in natural
    order, counting from 0 per class (``LayerNorm_2`` next to ``LayerNorm_0`` becomes ``LayerNorm_1``).
    Idempotent on Linen trees; ``encoderblock_N`` and ``layers_N`` keep their numbers (one class each)."""
    renamed: dict[tuple[str, ...], str] = {}

    def level(parent: tuple[str, ...], names: set[str]) -> None:
        counts: dict[str, int] = {}
        for name in sorted(names, key=_natural):
            match = _NUMBERED.match(name)
            if match is None:
                renamed[(*parent, name)] = name
                continue
            stem = match.group(1)
            renamed[(*parent, name)] = f"{stem}_{counts.get(stem, 0)}"
            counts[stem] = counts.get(stem, 0) + 1

    paths = [tuple(key.split("/")) for key in tree]
    depth = max((len(p) for p in paths), default=0)
    for d in range(depth):
        by_parent: dict[tuple[str, ...], set[str]] = {}
        for p in paths:
            if len(p) > d:
                by_parent.setdefault(p[:d], set()).add(p[d])
        for parent, names in by_parent.items():
            level(parent, names)
    out: Tree = {}
    for key, value in tree.items():
        parts = key.split("/")
        out["/".join(renamed[tuple(parts[: i + 1])] for i in range(len(parts)))] = value
    return out


def _natural(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def required(tree: Tree, key: str) -> np.ndarray:
    try:
        return tree[key]
    except KeyError:
        raise TreeError(f"the tree has no {key!r}; is this a LiT checkpoint (img/, txt/, t)?") from None


def block_count(tree: Tree, prefix: str) -> int:
    numbers = {int(m.group(1)) for k in tree if (m := re.match(re.escape(prefix) + r"(\d+)/", k))}
    if numbers != set(range(len(numbers))) or not numbers:
        raise TreeError(f"no consecutive {prefix}N blocks in the tree (found {sorted(numbers)[:8]})")
    return len(numbers)


# -- the image tower ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VitShape:
    patch: int
    width: int
    depth: int
    heads: int
    mlp: int
    image_size: int
    head: int | None  # the output width of img/head, None without one


def vit_shape(tree: Tree) -> VitShape:
    kernel = required(tree, "img/embedding/kernel")
    if kernel.ndim != 4 or kernel.shape[0] != kernel.shape[1] or kernel.shape[2] != 3:
        raise TreeError(f"img/embedding/kernel has shape {kernel.shape}; expected (P, P, 3, width)")
    patch, width = int(kernel.shape[0]), int(kernel.shape[3])
    blocks = "img/Transformer/encoderblock_"
    query = required(tree, f"{blocks}0/MultiHeadDotProductAttention_0/query/kernel")
    tokens = _positions(tree).shape[1] - 1
    side = round(tokens**0.5)
    if side * side != tokens:
        raise TreeError(f"{tokens} position embeddings (besides the class token) are not a square grid")
    head = tree.get("img/head/kernel")
    return VitShape(
        patch=patch,
        width=width,
        depth=block_count(tree, blocks),
        heads=int(query.shape[1]),
        mlp=int(required(tree, f"{blocks}0/MlpBlock_0/Dense_0/kernel").shape[1]),
        image_size=side * patch,
        head=None if head is None else int(head.shape[1]),
    )


def _positions(tree: Tree) -> np.ndarray:
    """``(1, 1 + tokens, width)`` with the class token's row first, as timm's ``pos_embed`` holds it.

    vit_jax adds the position embedding after prepending the class token (its table has that row);
    big_vision adds it before, so its table lacks the row and the class token gets none (zeros here)."""
    if "img/Transformer/posembed_input/pos_embedding" in tree:
        return tree["img/Transformer/posembed_input/pos_embedding"]
    table = required(tree, "img/pos_embedding")
    return np.concatenate([np.zeros_like(table[:, :1]), table], axis=1)


def attention_weights(tree: Tree, at: str, width: int) -> dict[str, np.ndarray]:
    """q/k/v/out of a flax ``MultiHeadDotProductAttention`` as torch ``Linear`` weights and biases."""
    out = {}
    for name in QKV:
        out[f"{name}.weight"] = tree[f"{at}/{name}/kernel"].reshape(width, -1).T
        out[f"{name}.bias"] = tree[f"{at}/{name}/bias"].reshape(-1)
    out["out.weight"] = tree[f"{at}/out/kernel"].reshape(-1, width).T
    out["out.bias"] = tree[f"{at}/out/bias"]
    return out


def vit_tower(tree: Tree) -> nn.Module:
    """The image tower: uint8-free, normalised pixels ``(B, 3, S, S)`` -> features (before L2 norm)."""
    from timm.models.vision_transformer import VisionTransformer

    s = vit_shape(tree)
    model = VisionTransformer(
        img_size=s.image_size,
        patch_size=s.patch,
        embed_dim=s.width,
        depth=s.depth,
        num_heads=s.heads,
        mlp_ratio=s.mlp / s.width,
        num_classes=s.head or 0,
        global_pool="token",
        act_layer="gelu_tanh",
    )
    state: dict[str, np.ndarray] = {
        "cls_token": required(tree, "img/cls").reshape(1, 1, s.width),
        "pos_embed": _positions(tree),
        "patch_embed.proj.weight": tree["img/embedding/kernel"].transpose(3, 2, 0, 1),
        "patch_embed.proj.bias": required(tree, "img/embedding/bias"),
        "norm.weight": required(tree, "img/Transformer/encoder_norm/scale"),
        "norm.bias": required(tree, "img/Transformer/encoder_norm/bias"),
    }
    if s.head is not None:
        state["head.weight"] = tree["img/head/kernel"].T
        state["head.bias"] = required(tree, "img/head/bias")
    for i in range(s.depth):
        at, to = f"img/Transformer/encoderblock_{i}", f"blocks.{i}"
        state.update(pre_ln_block(tree, at, to, s.width))
        attn = attention_weights(tree, f"{at}/MultiHeadDotProductAttention_0", s.width)
        state[f"{to}.attn.qkv.weight"] = np.concatenate(
            [attn[f"{n}.weight"] for n in ("query", "key", "value")]
        )
        state[f"{to}.attn.qkv.bias"] = np.concatenate([attn[f"{n}.bias"] for n in ("query", "key", "value")])
        state[f"{to}.attn.proj.weight"], state[f"{to}.attn.proj.bias"] = attn["out.weight"], attn["out.bias"]
    load_state(model, state)
    return model.eval()


def pre_ln_block(tree: Tree, at: str, to: str, width: int) -> dict[str, np.ndarray]:
    """A vit_jax ``Encoder1DBlock``'s norms and MLP under timm's ``Block`` names."""
    return {
        f"{to}.norm1.weight": required(tree, f"{at}/LayerNorm_0/scale"),
        f"{to}.norm1.bias": required(tree, f"{at}/LayerNorm_0/bias"),
        f"{to}.norm2.weight": required(tree, f"{at}/LayerNorm_1/scale"),
        f"{to}.norm2.bias": required(tree, f"{at}/LayerNorm_1/bias"),
        f"{to}.mlp.fc1.weight": required(tree, f"{at}/MlpBlock_0/Dense_0/kernel").T,
        f"{to}.mlp.fc1.bias": required(tree, f"{at}/MlpBlock_0/Dense_0/bias"),
        f"{to}.mlp.fc2.weight": required(tree, f"{at}/MlpBlock_0/Dense_1/kernel").T,
        f"{to}.mlp.fc2.bias": required(tree, f"{at}/MlpBlock_0/Dense_1/bias"),
    }


def load_state(model: nn.Module, state: Mapping[str, np.ndarray]) -> None:
    """Every parameter from ``state``, shapes checked: a tree that fits no parameter is an error, not a
    silently random weight."""
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()}
    own = model.state_dict()
    for key, value in tensors.items():
        if key in own and own[key].shape != value.shape:
            raise TreeError(
                f"{key}: the tree gives shape {tuple(value.shape)}, the tower needs {own[key].shape}"
            )
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise TreeError(f"the tree does not fill the tower: missing {missing[:5]}, unplaced {unexpected[:5]}")
