"""Crash-safe training: processes killed with SIGKILL while training, caching features or saving checkpoints.

A killed and resumed ``lit-train train`` ends with the same history and weights, bit for bit, as an
uninterrupted run; a reader never sees a half-written feature-cache shard or checkpoint, whenever the
writer dies; reruns finish the work and delete what the killed writers left in their hidden staging
folders. Every wait is bounded; kill moments are chosen by polling what the child has written.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lit_bundle import atomic
from tests import crash_worker
from tests.helpers import tiny_config
from training.checkpoint import checkpoints, is_complete, latest_checkpoint, load_train_state, load_weights
from training.feature_cache import FeatureCache

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
PER_EPOCH = 5  # train_size / batch_size below
TRAIN = (
    "steps=34",  # checkpoints at 7, 14, 21 and 28: all in the middle of an epoch
    "checkpoint_every=7",
    "batch_size=96",
    "data.synthetic.train_size=480",
    "model.text.width=96",
    "model.text.layers=2",
    "model.text.context_length=16",
    "model.text.dropout=0.1",  # draws from the RNG every step, so RNG state must resume exactly
)


def _start(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, *args], cwd=REPO, env=ENV, stdout=out, stderr=subprocess.STDOUT
        )


def _kill_when(process: subprocess.Popen, ready: Callable[[], bool], timeout_s: float = 90) -> bool:
    """SIGKILL ``process`` as soon as ``ready()``; False if it exited first. Always bounded in time."""
    deadline = time.monotonic() + timeout_s
    try:
        while process.poll() is None:
            if ready():
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=30)
                return True
            if time.monotonic() > deadline:
                pytest.fail(f"child {process.args} did not reach the kill point within {timeout_s} s")
            time.sleep(0.005)
        return False
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.is_dir() else []


def _train_command(tmp_path: Path, name: str, tower_weights: Path) -> list[str]:
    cfg = tiny_config(tmp_path / name, tower_weights, *TRAIN)
    config = tmp_path / f"{name}.json"
    config.write_text(cfg.model_dump_json())  # JSON is YAML
    return ["-m", "training", "train", "-c", str(config), "--resume"]


def test_training_killed_mid_epoch_resumes_to_the_same_final_metrics(
    tmp_path: Path, tower_weights: Path
) -> None:
    whole_cmd = _train_command(tmp_path, "whole", tower_weights)
    crash_cmd = _train_command(tmp_path, "crash", tower_weights)
    run = tmp_path / "crash" / "run"
    log = tmp_path / "crash.log"
    whole = _start(whole_cmd, tmp_path / "whole.log")  # the uninterrupted run, alongside
    crashed = _start(crash_cmd, log)

    def shown_step() -> int:  # the progress bar's count, a lower bound of the step being trained
        counts = re.findall(rb"LiT tuning:\s+\d+%\|[^|]*\|\s*(\d+)/34", log.read_bytes())
        return int(counts[-1]) if counts else 0

    def in_a_later_epoch() -> bool:
        latest = latest_checkpoint(run)
        if latest is None:
            return False
        step = shown_step()
        return step // PER_EPOCH > int(latest.name[5:]) // PER_EPOCH and step % PER_EPOCH != 0

    assert _kill_when(crashed, in_a_later_epoch), "the run finished before it could be killed"
    assert crashed.returncode == -signal.SIGKILL
    assert not (run / "history.json").exists() and not (run / "step-0000034").exists()
    killed_at = latest_checkpoint(run)
    assert killed_at is not None and int(killed_at.name[5:]) % PER_EPOCH != 0  # resumes mid-epoch

    resumed = subprocess.run(
        [sys.executable, *crash_cmd], cwd=REPO, env=ENV, capture_output=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stdout.decode()[-3000:] + resumed.stderr.decode()[-3000:]
    assert f"resumed from {killed_at.name}" in " ".join(resumed.stdout.decode().split())
    assert whole.wait(timeout=120) == 0, (tmp_path / "whole.log").read_text()[-3000:]

    full = tmp_path / "whole" / "run"
    history = json.loads((run / "history.json").read_text())
    assert [h["step"] for h in history] == list(range(1, 35))
    # every step's loss, learning rate and gradient norm, bit for bit
    assert (run / "history.json").read_bytes() == (full / "history.json").read_bytes()
    for name in ("model.safetensors", "tokenizer.json"):
        assert (run / "step-0000034" / name).read_bytes() == (full / "step-0000034" / name).read_bytes()
    expected = load_train_state(full / "step-0000034")["optimizer"]["state"]
    got = load_train_state(run / "step-0000034")["optimizer"]["state"]
    assert all(torch.equal(got[i]["exp_avg_sq"], expected[i]["exp_avg_sq"]) for i in expected)
    assert _hidden(run) == [] and _hidden(tmp_path / "crash" / "cache") == []  # the killed run's debris


def _check_visible_cache(store: FeatureCache, key: str) -> bool:
    """What a reader sees is either nothing or a complete cache whose every file matches its checksum."""
    for entry in store.root.iterdir() if store.root.is_dir() else []:
        assert entry.name.startswith(".") or (entry / "meta.json").is_file(), f"partial cache {entry} visible"
    cache = store.load(key)
    if cache is None:
        return False
    cache.verify()
    assert len(cache) == crash_worker.CACHE_SIZE
    return True


def test_feature_cache_build_killed_at_any_moment_is_never_seen_half_written(
    tmp_path: Path, tower_weights: Path
) -> None:
    root = tmp_path / "cache"
    store = FeatureCache(root)
    tower, data, key = crash_worker.cache_inputs(tower_weights)
    command = ["-m", "tests.crash_worker", "cache", str(root), str(tower_weights)]

    total = -(-crash_worker.CACHE_SIZE // crash_worker.CACHE_SHARD_ROWS)
    for count in (1, total // 2, total - 2):  # kill early, midway, and near the end of writing shards
        child = _start(command, tmp_path / f"cache-{count}.log")
        staging = f".tmp-*~{child.pid}~*"

        def ready(staging: str = staging, count: int = count) -> bool:
            _check_visible_cache(store, key)  # read while the build runs: never a partial shard
            return len(list(root.glob(f"{staging}/shard-*.npy"))) >= count

        if not _kill_when(child, ready):  # only near the end can a slow poll miss the moment
            assert count == total - 2 and child.returncode == 0, (tmp_path / f"cache-{count}.log").read_text()
        if not _check_visible_cache(store, key):  # (a kill near the end may come after the cache is done)
            assert list(root.glob(staging)), "the kill landed mid-build, so its staging folder stays"

    cache = store.load(key) or store.build(  # the rerun
        key, tower, data, crash_worker.CACHE_BATCH, progress=False, shard_rows=crash_worker.CACHE_SHARD_ROWS
    )
    assert _check_visible_cache(store, key)
    assert _hidden(root) == []  # the rerun deleted the killed builds' staging folders
    assert len(cache.meta["shards"]) == total
    order = list(range(len(data)))
    features, captions = cache.get_batch(order)
    with torch.no_grad():
        expected = tower(torch.stack([data[i][0] for i in order]))
    assert torch.allclose(features, expected, atol=1e-6)
    assert captions == [data[i][1] for i in order]


def _check_checkpoint(path: Path) -> int:
    """A visible checkpoint is complete and every value in it is its step number."""
    step = int(path.name[5:])
    assert is_complete(path) and (path / "tokenizer.json").is_file(), f"{path} is incomplete"
    model = crash_worker.checkpoint_model()
    load_weights(model, path)
    assert all(bool((p == step).all()) for p in model.parameters()), path
    state = load_train_state(path)
    assert state["step"] == step and bool((state["payload"] == step).all()), path
    assert json.loads((path / "config.json").read_text()) == {"step": step}
    assert json.loads((path / "tokenizer.json").read_text()) == {"step": step}
    return step


def _read_while_written(path: Path) -> bool:
    """Check ``path`` while the writer runs; False if it was replaced mid-read (gone, not partial)."""
    try:
        inode = path.stat().st_ino
    except FileNotFoundError:
        return False
    try:
        _check_checkpoint(path)
        return True
    except Exception:
        try:
            replaced = path.stat().st_ino != inode
        except FileNotFoundError:
            replaced = True
        if replaced:
            return False
        raise


def test_checkpoint_writer_killed_at_random_moments_leaves_only_complete_checkpoints(tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = ["-m", "tests.crash_worker", "checkpoints", str(out)]
    delays = random.Random(0)
    reads = 0
    for attempt in range(3):
        delay, before, started = delays.uniform(0.0, 0.3), len(checkpoints(out)), []

        def ready(delay: float = delay, before: int = before, started: list[float] = started) -> bool:
            nonlocal reads
            latest = latest_checkpoint(out)
            if latest is not None and _read_while_written(latest):
                reads += 1
            if not started and len(checkpoints(out)) > before:  # this writer's first save is done
                started.append(time.monotonic())
            return bool(started) and time.monotonic() - started[0] >= delay

        killed = _kill_when(_start(command, tmp_path / f"ckpt-{attempt}.log"), ready)
        assert killed, "the checkpoint writer finished before it could be killed"
        visible = checkpoints(out)
        steps = [_check_checkpoint(path) for path in visible]
        assert steps == list(range(1, len(steps) + 1))  # the writer continues after the latest, gap-free
        latest = latest_checkpoint(out)
        assert latest is not None and _check_checkpoint(latest) >= steps[-1] - 1
    assert reads > 0
    atomic.remove_stale(out)  # what the next run does first: the killed writers' staging folders go
    assert _hidden(out) == []
