"""The locked-feature cache: used when valid, rebuilt when weights, preprocessing or data change."""

from pathlib import Path

import numpy as np
import pytest
import torch

from lit_bundle import PreprocessSpec
from tests.helpers import tiny_config
from training.config import ImageTowerConfig
from training.data.pairs import pixel_transform
from training.data.synthetic import SyntheticPairs, SyntheticWorld
from training.feature_cache import FeatureCache, cache_key
from training.towers import build_image_tower
from training.train import train


def _tower():
    torch.manual_seed(0)
    return build_image_tower(
        ImageTowerConfig(kind="builtin", image_size=32, width=8), pretrained=False
    ).eval()


def _data(tower, size=24, seed=0):
    return SyntheticPairs(
        SyntheticWorld(image_size=32, seed=seed), "lit", size, pixel_transform(tower.preprocess)
    )


def test_key_changes_with_weights_preprocessing_and_data() -> None:
    tower = _tower()
    data = _data(tower)
    key = cache_key(tower, tower.preprocess, data.fingerprint())
    assert key == cache_key(_tower(), tower.preprocess, data.fingerprint())
    other_spec = PreprocessSpec(**{**tower.preprocess.model_dump(), "interpolation": "bicubic"})
    assert other_spec != tower.preprocess
    assert cache_key(tower, other_spec, data.fingerprint()) != key
    assert cache_key(tower, tower.preprocess, _data(tower, seed=1).fingerprint()) != key
    with torch.no_grad():
        next(tower.parameters()).add_(1e-3)
    assert cache_key(tower, tower.preprocess, data.fingerprint()) != key


def test_cache_holds_the_towers_features(tmp_path: Path) -> None:
    tower = _tower()
    data = _data(tower)
    store = FeatureCache(tmp_path)
    key = cache_key(tower, tower.preprocess, data.fingerprint())
    assert store.load(key) is None
    cache = store.build(key, tower, data, batch_size=7, progress=False)
    assert len(cache) == len(data)
    features, captions = cache.get_batch([5, 0, 23])
    with torch.no_grad():
        expected = tower(torch.stack([data[i][0] for i in (5, 0, 23)]))
    assert torch.allclose(features, expected, atol=1e-6)
    assert captions == [data[i][1] for i in (5, 0, 23)]
    assert isinstance(store.load(key)._shards[0], np.memmap)


def test_half_written_cache_is_never_used(tmp_path: Path) -> None:
    tower = _tower()
    data = _data(tower)
    store = FeatureCache(tmp_path)
    key = cache_key(tower, tower.preprocess, data.fingerprint())
    partial = store.path(key)
    partial.mkdir(parents=True)
    np.save(partial / "shard-00000.npy", np.zeros((3, 4), dtype=np.float32))  # a crash before meta.json
    (tmp_path / f".tmp-{key[:16]}-dead").mkdir()  # a crashed build's staging folder
    assert store.load(key) is None
    cache = store.build(key, tower, data, progress=False)
    assert len(cache) == len(data) and cache.dim != 4


def test_shards_have_checksums_that_catch_corruption(tmp_path: Path) -> None:
    tower = _tower()
    data = _data(tower)
    store = FeatureCache(tmp_path)
    key = cache_key(tower, tower.preprocess, data.fingerprint())
    cache = store.build(key, tower, data, batch_size=5, progress=False, shard_rows=10)
    assert [len(s) for s in cache._shards] == [10, 10, 4]
    cache.verify()
    shard = store.path(key) / "shard-00001.npy"
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 1
    shard.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"shard-00001\.npy is corrupt"):
        store.load(key).verify()


def test_training_builds_once_then_reuses_and_rebuilds_on_change(tmp_path: Path, tower_weights: Path) -> None:
    cfg = tiny_config(tmp_path, tower_weights, "steps=1")
    cache_dir = tmp_path / "cache"

    def complete_caches() -> set[str]:
        return {p.name for p in cache_dir.iterdir() if (p / "meta.json").is_file()}

    assert train(cfg, progress=False).cache_used
    first = complete_caches()
    assert len(first) == 1
    mtime = (cache_dir / next(iter(first)) / "meta.json").stat().st_mtime_ns
    train(cfg, progress=False)
    assert complete_caches() == first
    assert (cache_dir / next(iter(first)) / "meta.json").stat().st_mtime_ns == mtime  # not rebuilt
    train(tiny_config(tmp_path, tower_weights, "steps=1", "data.synthetic.train_size=48"), progress=False)
    assert len(complete_caches()) == 2
    unlocked = train(tiny_config(tmp_path, tower_weights, "steps=1", "model.mode=Uu"), progress=False)
    assert not unlocked.cache_used
    augmented = train(tiny_config(tmp_path, tower_weights, "steps=1", "data.augment=true"), progress=False)
    assert not augmented.cache_used


def test_a_run_that_builds_the_cache_trains_the_same_model_as_one_that_finds_it(
    tmp_path: Path, tower_weights: Path
) -> None:
    first = train(tiny_config(tmp_path / "a", tower_weights, f"cache_dir={tmp_path / 'c'}"), progress=False)
    second = train(tiny_config(tmp_path / "b", tower_weights, f"cache_dir={tmp_path / 'c'}"), progress=False)
    assert first.cache_used and second.cache_used
    assert first.history == second.history
    a, b = (r.checkpoint / "model.safetensors" for r in (first, second))
    assert a.read_bytes() == b.read_bytes()
