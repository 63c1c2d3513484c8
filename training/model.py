"""The LiT model: an image tower and a text tower, linear heads, and the contrastive loss.

LiT modes use the paper's notation, image tower first: ``L`` locked and pretrained, ``U`` unlocked and
pretrained, ``u`` unlocked and randomly initialised. A locked tower has no gradients *and* stays in eval
mode for the whole run (dropout off, BatchNorm statistics frozen), whatever ``.train()`` is called on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.config import LitMode
from training.losses import ContrastiveLoss
from training.towers.base import ImageTower, TextTower


def image_locked(mode: LitMode) -> bool:
    return mode[0] == "L"


def image_pretrained(mode: LitMode) -> bool:
    return mode[0] in "LU"


def text_pretrained(mode: LitMode) -> bool:
    return mode[1] == "U"


class LiTModel(nn.Module):
    def __init__(
        self,
        image_tower: ImageTower,
        text_tower: TextTower,
        mode: LitMode,
        loss_kind: str,
        embed_dim: int | None = None,
        image_head: bool = False,
    ) -> None:
        super().__init__()
        self.mode = mode
        self.image_tower = image_tower
        self.text_tower = text_tower
        if image_head:
            if embed_dim is None:
                raise ValueError("model.embed_dim is required when model.image_head is true")
            self.image_head: nn.Module = nn.Linear(image_tower.output_dim, embed_dim)
            self.embed_dim = embed_dim
        else:
            # Without an image head the text head maps straight into the image tower's feature space.
            self.image_head = nn.Identity()
            self.embed_dim = image_tower.output_dim
        self.text_head = nn.Linear(text_tower.output_dim, self.embed_dim)
        self.loss = ContrastiveLoss(loss_kind)
        if self.image_locked:
            self.image_tower.requires_grad_(False)
            self.image_tower.eval()

    @property
    def image_locked(self) -> bool:
        return image_locked(self.mode)

    def train(self, mode: bool = True) -> LiTModel:
        super().train(mode)
        if self.image_locked:
            self.image_tower.eval()
        return self

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Raw image-tower features (what the locked-feature cache stores)."""
        if self.image_locked:
            with torch.no_grad():
                return self.image_tower(pixels)
        return self.image_tower(pixels)

    def embed_image_features(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_head(features).float(), dim=-1)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.embed_image_features(self.image_features(pixels))

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        features = self.text_tower(input_ids, attention_mask)
        return F.normalize(self.text_head(features).float(), dim=-1)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixels: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Contrastive loss over the global batch, from pixels or from cached image-tower features."""
        if (pixels is None) == (features is None):
            raise ValueError("pass exactly one of pixels or features")
        image_emb = self.encode_image(pixels) if pixels is not None else self.embed_image_features(features)
        return self.loss(image_emb, self.encode_text(input_ids, attention_mask))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]
