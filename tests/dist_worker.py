"""Run under ``torchrun``: one DDP step on this process's share of a fixed batch (see test_distributed)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from training import distributed
from training.config import TrainConfig, load_config
from training.factory import build_model
from training.model import LiTModel

BATCH = 8


def make_model(loss: str, weights: Path, tokenizer: Path) -> LiTModel:
    cfg: TrainConfig = load_config(
        TrainConfig,
        None,
        [
            "model.image.image_size=32",
            "model.image.width=8",
            f"model.image.weights={weights}",
            "model.image_head=true",
            "model.embed_dim=16",
            "model.text.width=32",
            "model.text.layers=1",
            "model.text.heads=2",
            "model.text.context_length=12",
            f"loss.kind={loss}",
        ],
    )
    torch.manual_seed(0)
    return build_model(cfg.model, loss, tokenizer_file=tokenizer).train()


def fixed_batch(dim: int) -> tuple[torch.Tensor, list[str]]:
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(BATCH, dim, generator=generator)
    colours = ["red", "blue", "green", "pink"]
    shapes = ["circle", "square"]
    captions = [f"a {colours[i % 4]} {shapes[i // 4]}" for i in range(BATCH)]
    return features, captions


def step(model: torch.nn.Module, core: LiTModel, features: torch.Tensor, captions: list[str]) -> torch.Tensor:
    tokens = core.text_tower.tokenize(captions)
    loss = model(tokens["input_ids"], tokens["attention_mask"], features=features)
    loss.backward()
    return loss


def main(out: str, loss_kind: str, weights: str, tokenizer: str) -> None:
    info = distributed.init_distributed()
    model = make_model(loss_kind, Path(weights), Path(tokenizer))
    features, captions = fixed_batch(model.image_tower.output_dim)
    share = slice(info.rank * BATCH // info.world_size, (info.rank + 1) * BATCH // info.world_size)
    loss = step(DistributedDataParallel(model), model, features[share], captions[share])
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    if info.is_main:
        torch.save({"loss": loss.item(), "grads": grads, "world": info.world_size}, out)
    distributed.shutdown_distributed()


if __name__ == "__main__":
    main(*sys.argv[1:])
