"""What every image and text tower provides to the LiT model."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer
from torch import nn

from lit_bundle import PreprocessSpec


class ImageTower(nn.Module):
    """Maps normalised pixels ``(B, 3, S, S)`` to features ``(B, output_dim)``."""

    output_dim: int
    preprocess: PreprocessSpec


class TextTower(nn.Module):
    """Maps padded token ids ``(B, context_length)`` plus mask to features ``(B, output_dim)``.

    ``tokenizer`` is a Hugging Face ``tokenizers.Tokenizer`` configured to pad and truncate to
    ``context_length``; serving loads the same ``tokenizer.json``.
    """

    output_dim: int
    context_length: int
    tokenizer: Tokenizer

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        encodings = self.tokenizer.encode_batch(texts)
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask}

    def save_tokenizer(self, directory: Path) -> Path:
        path = Path(directory) / "tokenizer.json"
        self.tokenizer.save(str(path))
        return path


def fixed_length(tokenizer: Tokenizer, context_length: int, pad_id: int, pad_token: str) -> Tokenizer:
    """Configure ``tokenizer`` to pad and truncate every text to exactly ``context_length`` tokens."""
    tokenizer.enable_truncation(max_length=context_length)
    tokenizer.enable_padding(length=context_length, pad_id=pad_id, pad_token=pad_token)
    return tokenizer
