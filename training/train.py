"""The LiT training loop: read it top to bottom.

Data comes either from the locked-feature cache (locked image tower, no augmentation) or from the
image-text dataset itself. Each optimiser step uses a deterministic global batch (see ``batches``),
split over processes and accumulation micro-batches; the loss is contrastive over each micro-batch
gathered from all processes.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, IterableDataset
from tqdm import tqdm

from lit_bundle import atomic
from training import batches, distributed
from training.checkpoint import latest_checkpoint, load_train_state, load_weights, save_checkpoint
from training.config import TrainConfig
from training.data.pairs import DataError, collate_pairs, pixel_transform
from training.data.webdataset import WebDatasetPairs
from training.factory import build_model
from training.feature_cache import CachedFeatures, FeatureCache, cache_key
from training.model import LiTModel, image_locked, image_pretrained
from training.sources import caption_corpus, fingerprint, pair_dataset
from training.towers import build_image_tower
from training.towers.base import ImageTower


def cosine_lr(step: int, base_lr: float, warmup: int, total: int) -> float:
    """Linear warmup to ``base_lr``, then cosine decay to zero at ``total``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(1.0, progress)))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every global RNG this process draws from (dropout uses torch's; on a GPU, the current device's)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def make_optimizer(model: LiTModel, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not biases, norms, temperature or bias scalars)."""
    params = model.trainable_parameters()
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas)


@dataclass
class MicroBatch:
    captions: list[str]
    pixels: torch.Tensor | None = None
    features: torch.Tensor | None = None
    skipped: int = 0


@dataclass
class StreamPosition:
    """How far one process has read an IterableDataset: ``batches`` micro-batches of epoch ``epoch``."""

    epoch: int = 0
    batches: int = 0


@dataclass
class TrainResult:
    checkpoint: Path
    history: list[dict[str, float]] = field(default_factory=list)
    cache_used: bool = False
    train_seconds: float = 0.0
    resumed_from: Path | None = None


class _StepBatchSampler:
    """Yields this process's micro-batch index lists for steps ``start``..``cfg.steps``."""

    def __init__(self, num_samples: int, cfg: TrainConfig, info: distributed.DistInfo, start: int) -> None:
        self.num_samples, self.cfg, self.info, self.start = num_samples, cfg, info, start

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.cfg.steps):
            batch = batches.global_batch_indices(self.num_samples, self.cfg.batch_size, self.cfg.seed, step)
            for micro in batches.local_micro_batches(
                batch, self.info.rank, self.info.world_size, self.cfg.accumulation
            ):
                yield micro.tolist()

    def __len__(self) -> int:
        return (self.cfg.steps - self.start) * self.cfg.accumulation


def _cached_stream(
    cache: CachedFeatures, cfg: TrainConfig, info: distributed.DistInfo, start: int
) -> Iterator[MicroBatch]:
    for indices in _StepBatchSampler(len(cache), cfg, info, start):
        features, captions = cache.get_batch(indices)
        yield MicroBatch(captions, features=features)


def _dataset_stream(
    dataset, cfg: TrainConfig, info: distributed.DistInfo, start: int, position: StreamPosition
) -> Iterator[MicroBatch]:
    """This process's micro-batches for steps ``start``..``cfg.steps``.

    An IterableDataset is read in epochs (``set_epoch`` before each pass); ``position`` is where the
    stream starts (a resumed run's saved position) and is kept up to date with what was consumed.
    """
    common = {
        "num_workers": cfg.data.workers,
        "collate_fn": collate_pairs,
        # Worker seeds come from this generator, not the global RNG, so resuming stays exact.
        "generator": torch.Generator().manual_seed(cfg.seed),
    }
    if isinstance(dataset, IterableDataset):
        micro = cfg.batch_size // (info.world_size * cfg.accumulation)
        loader = DataLoader(dataset, batch_size=micro, drop_last=True, **common)
        to_skip = position.batches
        wanted = (cfg.steps - start) * cfg.accumulation
        produced = 0
        while True:
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(position.epoch)
            position.batches = 0
            for batch in loader:
                position.batches += 1
                if position.batches <= to_skip:  # resuming: consumed by the stopped run
                    continue
                yield MicroBatch(batch.captions, pixels=batch.pixels, skipped=batch.skipped)
                produced += 1
                if produced == wanted:
                    return
            if position.batches == 0:
                raise DataError(
                    f"process {info.rank} of {info.world_size} read no batch of {micro} samples in epoch "
                    f"{position.epoch} of data.path {cfg.data.path}: use more (smaller) shards than "
                    "processes x data.workers, or a smaller batch_size"
                )
            to_skip = max(0, to_skip - position.batches)  # an old checkpoint's skip may span epochs
            position.epoch += 1
    loader = DataLoader(dataset, batch_sampler=_StepBatchSampler(len(dataset), cfg, info, start), **common)
    for batch in loader:
        yield MicroBatch(batch.captions, pixels=batch.pixels, skipped=batch.skipped)


def _locked_feature_cache(
    cfg: TrainConfig, tower: ImageTower, dataset, info: distributed.DistInfo, progress: bool
) -> CachedFeatures:
    """Build (rank 0) or load the cache of the locked image tower's features.

    Rank 0 reads the whole training split (every shard of a WebDataset, not only its own).
    """
    store = FeatureCache(cfg.cache_dir)
    if isinstance(dataset, WebDatasetPairs):
        dataset = dataset.whole()
    key = cache_key(tower, tower.preprocess, fingerprint(cfg.data, dataset))
    if info.is_main and store.load(key) is None:
        store.build(key, tower, dataset, workers=cfg.data.workers, device=info.device, progress=progress)
    distributed.barrier()
    cache = store.load(key)
    assert cache is not None
    return cache


def use_feature_cache(cfg: TrainConfig) -> bool:
    return cfg.feature_cache and image_locked(cfg.model.mode) and not cfg.data.augment


def train(
    cfg: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    evaluator=None,
    stop_at: int | None = None,
) -> TrainResult:
    """Run LiT training as configured; ``evaluator(model, step) -> metrics`` runs every ``eval_every``.

    ``stop_at`` ends this run early after that step with a checkpoint (a time slice of a preemptible
    job); ``resume=True`` continues from the latest checkpoint exactly as if never stopped (or killed):
    the batches of step ``s`` are a pure function of ``(seed, s)`` (see ``batches``; a WebDataset stream's
    order is one of ``(seed, epoch)`` and the checkpoint holds each process's place in it), the learning
    rate a pure function of ``s``, and the checkpoint holds the weights, optimiser state, every process's
    RNG states and the history, so the resumed run computes what the uninterrupted one would: bit for bit on
    the CPU (with the same thread count); on GPUs up to nondeterministic kernels.
    """
    info = distributed.init_distributed()
    batches.check_divisible(cfg.batch_size, info.world_size, cfg.accumulation)
    seed_everything(cfg.seed)
    out_dir = Path(cfg.out_dir)
    if info.is_main:
        atomic.remove_stale(out_dir)  # what an earlier run killed while saving left behind
    checkpoint = latest_checkpoint(out_dir) if resume else None

    image_tower = build_image_tower(cfg.model.image, pretrained=image_pretrained(cfg.model.mode))
    image_tower.to(info.device)
    dataset = pair_dataset(cfg.data, pixel_transform(image_tower.preprocess), seed=cfg.seed)
    cached = use_feature_cache(cfg)
    cache = _locked_feature_cache(cfg, image_tower, dataset, info, progress) if cached else None

    if checkpoint is not None:
        tokenizer = {"tokenizer_file": checkpoint / "tokenizer.json"}
    else:
        tokenizer = {"corpus": cache.captions if cache is not None else caption_corpus(dataset)}
    # Building the feature cache draws from the global RNG (DataLoader seeds): seed again, so the new
    # towers start the same whether this run built the cache or found it.
    seed_everything(cfg.seed)
    model = build_model(cfg.model, cfg.loss.kind, image_tower=image_tower, **tokenizer)
    model.to(info.device)
    optimizer = make_optimizer(model, cfg)
    start, history = 0, []
    streaming = cache is None and isinstance(dataset, IterableDataset)
    position = StreamPosition()
    if checkpoint is not None:
        load_weights(model, checkpoint)
        state = load_train_state(checkpoint)
        optimizer.load_state_dict(state["optimizer"])
        start, history = state["step"], state["history"]
        set_rng_state(state["rng"][info.rank])
        positions = state.get("data_position")
        if positions is not None and len(positions) == info.world_size:
            position = StreamPosition(**positions[info.rank])
        else:  # a checkpoint from before positions were saved: skip everything read so far
            position = StreamPosition(0, start * cfg.accumulation)
    model.train()
    ddp = DistributedDataParallel(model) if info.enabled else None
    forward = ddp if ddp is not None else model

    stream = (
        _cached_stream(cache, cfg, info, start)
        if cache is not None
        else _dataset_stream(dataset, cfg, info, start, position)
    )
    autocast = torch.autocast(info.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    params = model.trainable_parameters()
    config_json = cfg.model_dump_json(indent=1)
    began = time.perf_counter()
    saved = checkpoint

    def save(step: int) -> Path:
        states = distributed.all_gather_objects((rng_state(), asdict(position)))
        if not info.is_main:
            return out_dir
        rngs = [rng for rng, _ in states]
        state = {"step": step, "optimizer": optimizer.state_dict(), "rng": rngs, "history": history}
        if streaming:  # each process's place in its stream, so a resumed run reads on from there
            state["data_position"] = [where for _, where in states]
        return save_checkpoint(out_dir, step, model, state, config_json, model.text_tower.save_tokenizer)

    end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
    bar = tqdm(range(start, end), desc="LiT tuning", disable=not (progress and info.is_main))
    for step in bar:
        lr = cosine_lr(step, cfg.optim.lr, cfg.optim.warmup_steps, cfg.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_loss, skipped = 0.0, 0
        for micro_index in range(cfg.accumulation):
            micro = next(stream)
            skipped += micro.skipped
            tokens = model.text_tower.tokenize(micro.captions)
            last = micro_index == cfg.accumulation - 1
            sync = contextlib.nullcontext() if ddp is None or last else ddp.no_sync()
            with sync:
                with autocast:
                    loss = forward(
                        tokens["input_ids"].to(info.device),
                        tokens["attention_mask"].to(info.device),
                        pixels=None if micro.pixels is None else micro.pixels.to(info.device),
                        features=None if micro.features is None else micro.features.to(info.device),
                    )
                (loss / cfg.accumulation).backward()
            step_loss += loss.item() / cfg.accumulation
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        done = step + 1
        record = {"step": done, "loss": step_loss, "lr": lr, "grad_norm": float(grad_norm)}
        if skipped:
            record["skipped"] = skipped
        history.append(record)
        if done % max(1, cfg.log_every) == 0:
            bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}")
        if evaluator is not None and cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
            if info.is_main:
                history[-1].update(evaluator(model, done))
                model.train()
            distributed.barrier()
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
            saved = save(done)
    train_seconds = time.perf_counter() - began
    if start < end or saved is None:
        saved = save(end)
    if info.is_main:
        atomic.write_atomic(out_dir / "history.json", json.dumps(history))
    return TrainResult(Path(saved) if saved else out_dir, history, cached, train_seconds, checkpoint)
