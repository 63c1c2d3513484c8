"""WebDataset at scale: shard lists, per-epoch shuffling split over ranks and workers, the held-out split by
key, exact resume across epochs, and ``torchrun`` with two processes reading and caching every shard."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from lit_bundle.preprocess import PreprocessSpec
from tests import wds_worker
from tests.helpers import tiny_config
from training.checkpoint import latest_checkpoint, load_train_state
from training.config import DataConfig
from training.data.pairs import DataError
from training.data.split import in_split
from training.data.webdataset import WebDatasetPairs, expand_shards, webdataset_fingerprint
from training.distributed import DistInfo
from training.feature_cache import FeatureCache
from training.sources import fingerprint, pair_dataset
from training.train import StreamPosition, _dataset_stream, train

TRANSFORM = wds_worker.pixel_transform(PreprocessSpec(size=8))
HOLDOUT = 0.25


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def write_shards(folder: Path, shards: int = 6, per_shard: int = 4) -> tuple[str, list[str]]:
    """``shards`` tars of tiny PNGs whose ``.txt`` caption is the sample's key; returns (pattern, keys)."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = []
    for shard in range(shards):
        with wds.TarWriter(str(folder / f"shard-{shard:03d}.tar")) as sink:
            for i in range(per_shard):
                key = f"s{shard}-{i}"
                sink.write({"__key__": key, "png": png(shard * 100 + i), "txt": key})
                keys.append(key)
    return str(folder / f"shard-{{000..{shards - 1:03d}}}.tar"), keys


def captions(dataset) -> list[str]:
    return [caption for _, caption in dataset]


def shard_of(key: str) -> str:
    return key.split("-")[0]


# -- shard lists -------------------------------------------------------------------------------


def test_shard_lists_patterns_and_joins_expand_to_the_same_shards(tmp_path: Path) -> None:
    pattern, keys = write_shards(tmp_path / "data", shards=3)
    shards = [str(tmp_path / "data" / f"shard-{i:03d}.tar") for i in range(3)]
    assert expand_shards(pattern) == shards
    assert expand_shards(f"{shards[2]}::{tmp_path}/data/shard-{{000..001}}.tar") == [shards[2], *shards[:2]]
    lists = tmp_path / "lists"
    lists.mkdir()
    listing = lists / "train.txt"
    listing.write_text(
        f"# the first two, relative to this file\n\n  ../data/shard-{{000..001}}.tar\n{shards[2]}\n"
    )
    expanded = expand_shards(str(listing))
    assert [Path(s).resolve() for s in expanded] == [Path(s) for s in shards]
    assert sorted(captions(WebDatasetPairs(str(listing), TRANSFORM))) == sorted(keys)
    assert len(expand_shards(f"{listing}::{shards[0]}")) == 4  # a list may be one of several '::' parts

    first = webdataset_fingerprint(str(listing))
    assert WebDatasetPairs(str(listing)).fingerprint() == first
    listing.write_text("../data/shard-000.tar\n")
    assert webdataset_fingerprint(str(listing)) != first  # keyed on the expanded list, not the file name


def test_shard_list_mistakes_say_what_to_fix(tmp_path: Path) -> None:
    write_shards(tmp_path, shards=1)
    listing = tmp_path / "shards.txt"
    listing.write_text("# nothing yet\n\n")
    with pytest.raises(DataError, match=r"shards\.txt names no shards: add one shard"):
        WebDatasetPairs(str(listing))
    with pytest.raises(DataError, match=r"shard list .*other\.txt does not exist: check data\.path"):
        WebDatasetPairs(str(tmp_path / "other.txt"))
    listing.write_text("shard-000.tar\nshard-{001..002}.tar\n")
    with pytest.raises(
        DataError, match=r"shard-001\.tar does not exist \(2 of 3 missing\): check data\.path"
    ):
        WebDatasetPairs(str(listing))
    with pytest.raises(DataError, match="expands to no shards"):
        WebDatasetPairs("::")
    with pytest.raises(ValueError, match="split must be one of"):
        WebDatasetPairs(str(tmp_path / "shard-000.tar"), split="test")  # type: ignore[arg-type]


# -- epochs, ranks and workers -----------------------------------------------------------------


def test_each_epoch_reads_the_shards_in_a_new_order_seeded_by_seed_and_epoch(tmp_path: Path) -> None:
    pattern, keys = write_shards(tmp_path)
    data = WebDatasetPairs(
        pattern, TRANSFORM, shuffle_buffer=1, seed=0
    )  # a 1-sample buffer keeps shards whole
    orders = {}
    for epoch in (0, 1, 0):
        data.set_epoch(epoch)
        seen = captions(data)
        assert sorted(seen) == sorted(keys)
        shards = list(dict.fromkeys(shard_of(k) for k in seen))
        assert len(shards) == 6 and [shard_of(k) for k in seen] == [s for s in shards for _ in range(4)]
        assert orders.setdefault(epoch, shards) == shards  # reproducible
    assert orders[0] != orders[1]
    other_seed = WebDatasetPairs(pattern, TRANSFORM, shuffle_buffer=1, seed=1)
    assert list(dict.fromkeys(shard_of(k) for k in captions(other_seed))) != orders[0]

    buffered = WebDatasetPairs(pattern, TRANSFORM, shuffle_buffer=8, seed=0)
    assert [shard_of(k) for k in captions(buffered)] != [s for s in orders[0] for _ in range(4)]
    unshuffled = captions(WebDatasetPairs(pattern, TRANSFORM))
    assert unshuffled == keys  # no buffer: shards and samples in listed order, whatever the epoch


def test_ranks_read_disjoint_shards_and_every_shard_each_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pattern, keys = write_shards(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    data = WebDatasetPairs(pattern, TRANSFORM, shuffle_buffer=4, seed=0)
    orders = []
    for epoch in (0, 1):
        data.set_epoch(epoch)
        per_rank = []
        for rank in ("0", "1"):
            monkeypatch.setenv("RANK", rank)
            loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=2)  # copies at iter()
            per_rank.append(captions(loader))
        assert sorted(per_rank[0] + per_rank[1]) == sorted(keys)
        assert not {shard_of(k) for k in per_rank[0]} & {shard_of(k) for k in per_rank[1]}
        orders.append(per_rank)
    assert orders[0] != orders[1]  # the workers' copies received the epoch


# -- the held-out split --------------------------------------------------------------------------


def test_the_split_is_chosen_by_key_before_images_are_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pattern, keys = write_shards(tmp_path)
    heldout = [k for k in keys if in_split(k, "heldout", HOLDOUT)]
    train_keys = [k for k in keys if k not in heldout]
    assert heldout and len(heldout) < len(keys) / 2
    assert captions(WebDatasetPairs(pattern, TRANSFORM, split="train", holdout=HOLDOUT)) == train_keys
    assert captions(WebDatasetPairs(pattern, TRANSFORM, split="heldout", holdout=HOLDOUT)) == heldout
    assert captions(WebDatasetPairs(pattern, TRANSFORM, split="all", holdout=HOLDOUT)) == keys

    # a corrupt held-out image is never decoded by the training split, which drops it first
    shard = int(heldout[0][1 : heldout[0].index("-")])
    samples = list(wds.WebDataset(str(tmp_path / f"shard-{shard:03d}.tar"), shardshuffle=False))
    with wds.TarWriter(str(tmp_path / f"shard-{shard:03d}.tar")) as sink:
        for sample in samples:
            png_bytes = b"\x89PNG garbage" if sample["__key__"] == heldout[0] else sample["png"]
            sink.write({"__key__": sample["__key__"], "png": png_bytes, "txt": sample["txt"]})
    assert captions(WebDatasetPairs(pattern, TRANSFORM, split="train", holdout=HOLDOUT)) == train_keys
    with pytest.raises(DataError, match=f"'{heldout[0]}': undecodable image"):
        captions(WebDatasetPairs(pattern, TRANSFORM, split="heldout", holdout=HOLDOUT))

    # whole(): one process reads the whole split, in order, whatever its rank
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    shared = WebDatasetPairs(pattern, TRANSFORM, shuffle_buffer=4, split="train", holdout=HOLDOUT)
    assert 0 < len(captions(shared)) < len(train_keys)
    assert captions(shared.whole()) == train_keys and shared.split_by_node and shared.shuffle_buffer == 4
    assert shared.whole().fingerprint() == shared.fingerprint()
    prints = {WebDatasetPairs(pattern, split=s, holdout=h).fingerprint() for s, h in
              [("train", HOLDOUT), ("heldout", HOLDOUT), ("train", 0.5), ("all", 0.0)]}  # fmt: skip
    assert len(prints) == 4


def test_pair_dataset_reads_the_training_split_shared_and_other_splits_whole(tmp_path: Path) -> None:
    pattern, keys = write_shards(tmp_path)
    cfg = DataConfig(kind="webdataset", path=pattern, holdout=HOLDOUT)
    train_set = pair_dataset(cfg, TRANSFORM, seed=5)
    assert isinstance(train_set, WebDatasetPairs)
    assert (train_set.split, train_set.holdout, train_set.seed) == ("train", HOLDOUT, 5)
    assert train_set.split_by_node and train_set.shuffle_buffer > 0
    held = pair_dataset(cfg, TRANSFORM, split="heldout")
    assert isinstance(held, WebDatasetPairs) and not held.split_by_node and held.shuffle_buffer == 0
    assert captions(held) == [k for k in keys if in_split(k, "heldout", HOLDOUT)]
    assert fingerprint(cfg, train_set) != fingerprint(cfg, held)
    other = cfg.model_copy(update={"holdout": 0.5})
    assert fingerprint(other, pair_dataset(other, TRANSFORM)) != fingerprint(cfg, train_set)


# -- exact resume across epochs ------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_each_stream_where_it_stopped(
    tmp_path: Path, tower_weights: Path, workers: int
) -> None:
    pattern, keys = write_shards(tmp_path / "data")
    per_epoch = len([k for k in keys if in_split(k, "train", HOLDOUT)]) // 8
    assert per_epoch == 2  # so steps 1-6 span three epochs, and step 3 ends mid-epoch 1 (workers=0)
    common = (
        "data.kind=webdataset", f"data.path={pattern}", f"data.holdout={HOLDOUT}", f"data.workers={workers}",
        "feature_cache=false", "steps=6", "batch_size=8", "model.text.dropout=0.2",
    )  # fmt: skip
    whole = train(tiny_config(tmp_path / "a", tower_weights, *common), progress=False)
    cfg = tiny_config(tmp_path / "b", tower_weights, *common)
    train(cfg, progress=False, stop_at=3)
    stopped = latest_checkpoint(cfg.out_dir)
    assert stopped is not None and stopped.name == "step-0000003"
    (position,) = load_train_state(stopped)["data_position"]
    assert position["epoch"] == 1 and (workers or position == {"epoch": 1, "batches": 1})

    # the same checkpoint without the position (an older run): resumed by skipping from the start
    legacy = tiny_config(tmp_path / "c", tower_weights, *common)
    shutil.copytree(cfg.out_dir, legacy.out_dir)
    state_file = Path(legacy.out_dir) / stopped.name / "train_state.pt"
    state = torch.load(state_file, weights_only=False)
    del state["data_position"]
    torch.save(state, state_file)

    for run in (cfg, legacy):
        resumed = train(run, resume=True, progress=False)
        assert [h["step"] for h in resumed.history] == [1, 2, 3, 4, 5, 6]
        assert resumed.history == whole.history  # bit for bit: loss, learning rate and gradient norm
        weights = (resumed.checkpoint / "model.safetensors").read_bytes()
        assert weights == (whole.checkpoint / "model.safetensors").read_bytes()
    assert len({h["loss"] for h in whole.history}) == 6  # the comparison can fail


# -- torchrun ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_share_every_shard_once_per_epoch_and_cache_the_whole_split(
    tmp_path: Path, tower_weights: Path
) -> None:
    pattern, keys = write_shards(tmp_path / "data")
    train_keys = sorted(k for k in keys if in_split(k, "train", HOLDOUT))
    data = ("data.kind=webdataset", f"data.path={pattern}", f"data.holdout={HOLDOUT}", "batch_size=8")
    cached = tiny_config(tmp_path / "cached", tower_weights, *data, "steps=2")
    streamed = tiny_config(tmp_path / "streamed", tower_weights, *data, "steps=3", "feature_cache=false")
    configs = []
    for name, cfg in (("cached", cached), ("streamed", streamed)):
        configs.append(tmp_path / f"{name}.json")
        configs[-1].write_text(cfg.model_dump_json())  # JSON is YAML
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}", wds_worker.__file__, str(tmp_path), pattern, str(HOLDOUT),
        *map(str, configs),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    for epoch in ("0", "1"):
        first, second = ranks[0][epoch], ranks[1][epoch]
        assert sorted(first + second) == train_keys  # every training sample once, no held-out one
        assert first and second and not {shard_of(k) for k in first} & {shard_of(k) for k in second}
    assert [r["0"] for r in ranks] != [r["1"] for r in ranks]

    (folder,) = [p for p in Path(cached.cache_dir).iterdir() if not p.name.startswith(".")]
    cache = FeatureCache(cached.cache_dir).load(folder.name)
    assert cache is not None and len(cache) == len(train_keys) and sorted(cache.captions) == train_keys
    history = json.loads((Path(streamed.out_dir) / "history.json").read_text())
    assert [h["step"] for h in history] == [1, 2, 3] and all(np.isfinite(h["loss"]) for h in history)
    positions = load_train_state(Path(streamed.out_dir) / "step-0000003")["data_position"]
    assert len(positions) == 2 and all(p["epoch"] >= 1 for p in positions)  # each rank: 9 samples, 4/batch


def test_the_training_stream_sets_each_epoch_and_starts_from_a_position(tmp_path: Path) -> None:
    pattern, _ = write_shards(tmp_path / "data")
    data = WebDatasetPairs(pattern, TRANSFORM, shuffle_buffer=4, split="train", holdout=HOLDOUT)
    expected = []
    for epoch in range(3):  # 18 training samples: two batches of 8 per epoch
        data.set_epoch(epoch)
        seen = captions(data)
        expected += [seen[:8], seen[8:16]]
    assert expected[0:2] != expected[2:4]
    cfg = tiny_config(tmp_path, tmp_path / "unused.safetensors", "batch_size=8", "steps=5")
    position = StreamPosition()
    assert [b.captions for b in _dataset_stream(data, cfg, DistInfo(), 0, position)] == expected[:5]
    assert position == StreamPosition(epoch=2, batches=1)
    position = StreamPosition(epoch=1, batches=1)  # where a run stopped after step 3 left off
    assert [b.captions for b in _dataset_stream(data, cfg, DistInfo(), 3, position)] == expected[3:5]
    legacy = StreamPosition(epoch=0, batches=3)  # an old checkpoint's skip from the start spans epochs
    assert [b.captions for b in _dataset_stream(data, cfg, DistInfo(), 3, legacy)] == expected[3:5]
