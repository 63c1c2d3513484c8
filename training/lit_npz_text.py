"""The text towers of Google's LiT checkpoints (see training/lit_npz.py for the file format).

- **BERT** (LiT-B16B, B16B_2, L16L; ``txt/BertEncoder_0``): flaxformer's post-LN BERT with 2-D kernels,
  token + position + segment embeddings (segment 0), a key mask from the ids (pad id 0), the ``[CLS]``
  position pooled and ``txt/head`` applied: transformers' ``BertModel`` without its pooler.
- **ViT-style** (LiT-L16S, L16Ti; ``txt/Embed_0``): pre-LN blocks like the image tower's, one learned
  position table as long as the context, no attention mask at all (padding attended), the last position
  pooled, ``txt/head``: exactly transformers' ``SiglipTextModel`` called without a mask.

Both take ``(input_ids, attention_mask)`` like every bundle text encoder and return features before L2 norm.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from training.lit_npz import (
    BERT_HEAD_DIM,
    QKV,
    Tree,
    TreeError,
    attention_weights,
    block_count,
    load_state,
    pre_ln_block,
    required,
)

BERT = "txt/BertEncoder_0"
ATTENTION = "MultiHeadDotProductAttention_0"
SIGLIP_ATTENTION = {"query": "q_proj", "key": "k_proj", "value": "v_proj", "out": "out_proj"}


def text_kind(tree: Tree) -> str:
    if f"{BERT}/embedder/embedders_token_ids/embedding" in tree:
        return "bert"
    if "txt/Embed_0/embedding" in tree:
        return "vit"
    first = next((k for k in sorted(tree) if k.startswith("txt/")), None)
    raise TreeError(
        f"cannot place the text tower: no {BERT}/... (BERT) nor txt/Embed_0 (ViT-style) key"
        + (f"; its first key is {first!r}" if first else "; the tree has no txt/ keys")
    )


def context_length(tree: Tree) -> int:
    """LiT's text context: 16 for every published model; the ViT-style tower's table is that long."""
    return int(tree["txt/pos_embedding"].shape[1]) if text_kind(tree) == "vit" else 16


def vocab_size(tree: Tree) -> int:
    key = (
        f"{BERT}/embedder/embedders_token_ids/embedding"
        if text_kind(tree) == "bert"
        else "txt/Embed_0/embedding"
    )
    return int(tree[key].shape[0])


class BertFeatures(nn.Module):
    """``BertModel`` -> the ``[CLS]`` position -> ``txt/head``."""

    def __init__(self, bert: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.bert, self.head = bert, head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        out: torch.Tensor = self.head(hidden[:, 0])
        return out


class UnmaskedFeatures(nn.Module):
    """``SiglipTextModel`` without a mask (as LiT's ViT-style tower runs); the mask stays a graph input."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(input_ids=input_ids).pooler_output
        return out + (attention_mask[:, :1] * 0).to(out.dtype)


def text_tower(tree: Tree, bert_heads: int | None = None) -> nn.Module:
    """The tree's text tower; ``bert_heads`` overrides the BERT head count that 2-D kernels do not record."""
    return bert_tower(tree, bert_heads) if text_kind(tree) == "bert" else vit_text_tower(tree)


def _head(tree: Tree) -> nn.Linear:
    kernel = required(tree, "txt/head/kernel")
    head = nn.Linear(*kernel.shape)
    head.weight.data = torch.from_numpy(np.ascontiguousarray(kernel.T))
    head.bias.data = torch.from_numpy(required(tree, "txt/head/bias").copy())
    return head


def bert_tower(tree: Tree, heads: int | None = None) -> nn.Module:
    from transformers import BertConfig, BertModel

    at = f"{BERT}/embedder"
    tokens = required(tree, f"{at}/embedders_token_ids/embedding")
    width = int(tokens.shape[1])
    layers = f"{BERT}/encoder_block/layer_sequence/layers_"
    query = required(tree, f"{layers}0/attention_block/attention_layer/query/kernel")
    if heads is None:
        heads = int(query.shape[1]) if query.ndim == 3 else width // BERT_HEAD_DIM
        if query.ndim != 3 and width % BERT_HEAD_DIM:
            raise TreeError(
                f"the BERT tower's width {width} is not a multiple of {BERT_HEAD_DIM}, the head width of "
                "every published BERT: give the number of attention heads (--text-heads)"
            )
    if width % heads:
        raise TreeError(f"{heads} attention heads do not divide the BERT tower's width {width}")
    depth = block_count(tree, layers)
    config = BertConfig(
        vocab_size=int(tokens.shape[0]),
        hidden_size=width,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        intermediate_size=int(required(tree, f"{layers}0/mlp_block/mlp/dense_layer/kernel").shape[1]),
        hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-12,
        max_position_embeddings=int(required(tree, f"{at}/embedders_position_ids/embedding").shape[0]),
        type_vocab_size=int(required(tree, f"{at}/embedders_segment_ids/embedding").shape[0]),
        attn_implementation="eager",
    )
    state = {
        "embeddings.word_embeddings.weight": tokens,
        "embeddings.position_embeddings.weight": tree[f"{at}/embedders_position_ids/embedding"],
        "embeddings.token_type_embeddings.weight": tree[f"{at}/embedders_segment_ids/embedding"],
        "embeddings.LayerNorm.weight": required(tree, f"{BERT}/layer_norm/scale"),
        "embeddings.LayerNorm.bias": required(tree, f"{BERT}/layer_norm/bias"),
    }
    for i in range(depth):
        at_layer, to = f"{layers}{i}", f"encoder.layer.{i}"
        attention = _bert_attention(tree, at_layer, width)
        for name in ("query", "key", "value"):
            state[f"{to}.attention.self.{name}.weight"] = attention[f"{name}.weight"]
            state[f"{to}.attention.self.{name}.bias"] = attention[f"{name}.bias"]
        state[f"{to}.attention.output.dense.weight"] = attention["out.weight"]
        state[f"{to}.attention.output.dense.bias"] = attention["out.bias"]
        pairs = {
            "attention.output.LayerNorm": "attention_block/layer_norm",
            "output.LayerNorm": "mlp_block/layer_norm",
        }
        for torch_name, flax_name in pairs.items():
            state[f"{to}.{torch_name}.weight"] = required(tree, f"{at_layer}/{flax_name}/scale")
            state[f"{to}.{torch_name}.bias"] = required(tree, f"{at_layer}/{flax_name}/bias")
        for torch_name, flax_name in {"intermediate.dense": "mlp_block/mlp/dense_layer",
                                      "output.dense": "mlp_block/dense_layer"}.items():  # fmt: skip
            state[f"{to}.{torch_name}.weight"] = required(tree, f"{at_layer}/{flax_name}/kernel").T
            state[f"{to}.{torch_name}.bias"] = required(tree, f"{at_layer}/{flax_name}/bias")
    bert = BertModel(config, add_pooling_layer=False)
    load_state(bert, state)
    return BertFeatures(bert, _head(tree)).eval()


def _bert_attention(tree: Tree, at_layer: str, width: int) -> dict[str, np.ndarray]:
    """flaxformer's attention: q/k/v under ``attention_layer``, the output projection as the block's own
    ``dense_layer``; kernels 2-D ``(in, out)`` (3-D ones are flattened first)."""
    attention = f"{at_layer}/attention_block/attention_layer"
    out = {}
    for name in QKV:
        out[f"{name}.weight"] = required(tree, f"{attention}/{name}/kernel").reshape(width, -1).T
        out[f"{name}.bias"] = required(tree, f"{attention}/{name}/bias").reshape(-1)
    out["out.weight"] = required(tree, f"{at_layer}/attention_block/dense_layer/kernel").reshape(-1, width).T
    out["out.bias"] = required(tree, f"{at_layer}/attention_block/dense_layer/bias")
    return out


def vit_text_tower(tree: Tree) -> nn.Module:
    from transformers import SiglipTextConfig, SiglipTextModel

    tokens = required(tree, "txt/Embed_0/embedding")
    positions = required(tree, "txt/pos_embedding")
    if "txt/Encoder_0/pos_embedding" in tree:  # some older trees hold the table twice; both are added
        positions = positions + tree["txt/Encoder_0/pos_embedding"]
    width, blocks = int(tokens.shape[1]), "txt/Encoder_0/encoderblock_"
    depth = block_count(tree, blocks)
    head = required(tree, "txt/head/kernel")
    config = SiglipTextConfig(
        vocab_size=int(tokens.shape[0]),
        hidden_size=width,
        intermediate_size=int(required(tree, f"{blocks}0/MlpBlock_0/Dense_0/kernel").shape[1]),
        num_hidden_layers=depth,
        num_attention_heads=int(
            required(tree, f"{blocks}0/MultiHeadDotProductAttention_0/query/kernel").shape[1]
        ),
        max_position_embeddings=int(positions.shape[1]),
        projection_size=int(head.shape[1]),
        hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-6,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        attn_implementation="eager",
    )
    state = {
        "embeddings.token_embedding.weight": tokens,
        "embeddings.position_embedding.weight": positions[0],
        "final_layer_norm.weight": required(tree, "txt/Encoder_0/encoder_norm/scale"),
        "final_layer_norm.bias": required(tree, "txt/Encoder_0/encoder_norm/bias"),
        "head.weight": head.T,
        "head.bias": required(tree, "txt/head/bias"),
    }
    timm_names = {"norm1": "layer_norm1", "norm2": "layer_norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    for i in range(depth):
        at, to = f"{blocks}{i}", f"encoder.layers.{i}"
        for key, value in pre_ln_block(tree, at, "x", width).items():
            module, param = key.removeprefix("x.").rsplit(".", 1)
            state[f"{to}.{timm_names[module]}.{param}"] = value
        attention = attention_weights(tree, f"{at}/MultiHeadDotProductAttention_0", width)
        for flax_name, torch_name in {
            "query": "q_proj",
            "key": "k_proj",
            "value": "v_proj",
            "out": "out_proj",
        }.items():
            state[f"{to}.self_attn.{torch_name}.weight"] = attention[f"{flax_name}.weight"]
            state[f"{to}.self_attn.{torch_name}.bias"] = attention[f"{flax_name}.bias"]
    model = SiglipTextModel(config)
    load_state(model, state)
    return UnmaskedFeatures(model).eval()
