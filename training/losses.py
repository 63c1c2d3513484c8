"""Contrastive losses over the global batch (all processes), as in CLIP/LiT and SigLIP.

Every process computes the same loss over the gathered batch. ``gather_with_grad`` sums the gradient
that reaches each process's own embeddings, so each process holds ``world_size`` times its share; DDP's
gradient averaging then yields exactly the gradient of a single process on the concatenated batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from training.distributed import gather_with_grad

SOFTMAX_INIT_SCALE = math.log(10.0)
SIGMOID_INIT_SCALE = math.log(10.0)
SIGMOID_INIT_BIAS = -10.0
MAX_LOG_SCALE = math.log(100.0)


def softmax_contrastive_loss(
    image_emb: torch.Tensor, text_emb: torch.Tensor, log_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE over the global batch; the matching pair of row i is column i."""
    images, texts = gather_with_grad(image_emb), gather_with_grad(text_emb)
    logits = log_scale.clamp(max=MAX_LOG_SCALE).exp() * images @ texts.T
    targets = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def sigmoid_contrastive_loss(
    image_emb: torch.Tensor, text_emb: torch.Tensor, log_scale: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """SigLIP: every image-text pair is an independent binary problem, summed and divided by the batch."""
    images, texts = gather_with_grad(image_emb), gather_with_grad(text_emb)
    logits = log_scale.exp() * images @ texts.T + bias
    signs = 2.0 * torch.eye(logits.shape[0], device=logits.device, dtype=logits.dtype) - 1.0
    return -F.logsigmoid(signs * logits).sum() / logits.shape[0]


class ContrastiveLoss(nn.Module):
    """Holds the learnable temperature (and SigLIP bias) so they train with the model."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        if kind not in ("softmax", "sigmoid"):
            raise ValueError(f"loss.kind must be 'softmax' or 'sigmoid', not {kind!r}")
        self.kind = kind
        init_scale = SOFTMAX_INIT_SCALE if kind == "softmax" else SIGMOID_INIT_SCALE
        self.log_scale = nn.Parameter(torch.tensor(init_scale))
        self.bias = nn.Parameter(torch.tensor(SIGMOID_INIT_BIAS)) if kind == "sigmoid" else None

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        image_emb, text_emb = image_emb.float(), text_emb.float()
        if self.bias is None:
            return softmax_contrastive_loss(image_emb, text_emb, self.log_scale)
        return sigmoid_contrastive_loss(image_emb, text_emb, self.log_scale, self.bias)
