"""The text-embedding cache: positions of hits and misses, LRU order, the byte bound, thread safety."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from service.text_cache import ENTRY_OVERHEAD_BYTES, TextEmbeddingCache, entry_bytes

MODEL = "lit_demo:3"
TEMPLATES = ("a photo of a {}.", "a drawing of a {}.")


def _vectors(n: int, dim: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def test_hits_and_misses_by_position() -> None:
    seen: dict[str, list[int]] = {"hit": [], "miss": [], "size": []}
    cache = TextEmbeddingCache(
        1 << 20,
        on_hit=seen["hit"].append,
        on_miss=seen["miss"].append,
        on_size=seen["size"].append,
    )
    vectors = _vectors(2)
    cache.put_many(MODEL, TEMPLATES, ["cat", "dog"], vectors)
    found, missing = cache.get_many(MODEL, TEMPLATES, ["bird", "dog", "cat", "fish"])
    assert missing == [0, 3]
    assert sorted(found) == [1, 2]
    np.testing.assert_array_equal(found[1], vectors[1])
    np.testing.assert_array_equal(found[2], vectors[0])
    assert (cache.hits, cache.misses, cache.entries) == (2, 2, 2)
    assert seen == {"hit": [2], "miss": [2], "size": [2]}
    # Another model version or template set is a different entry.
    assert cache.get_many("lit_demo:4", TEMPLATES, ["cat"])[1] == [0]
    assert cache.get_many(MODEL, TEMPLATES[:1], ["cat"])[1] == [0]
    assert cache.get_many(MODEL, TEMPLATES[::-1], ["cat"])[1] == [0]


def test_entries_are_private_read_only_copies() -> None:
    cache = TextEmbeddingCache(1 << 20)
    vectors = _vectors(1)
    cache.put_many(MODEL, TEMPLATES, ["cat"], vectors)
    vectors[0, 0] = 99.0
    found, _ = cache.get_many(MODEL, TEMPLATES, ["cat"])
    assert found[0][0] != 99.0 and found[0].dtype == np.float32
    with pytest.raises(ValueError):
        found[0][0] = 1.0
    with pytest.raises(ValueError, match="one per label"):
        cache.put_many(MODEL, TEMPLATES, ["a", "b"], _vectors(3))


def test_lru_order_access_refreshes() -> None:
    size = entry_bytes("a", _vectors(1)[0])
    cache = TextEmbeddingCache(3 * size)
    cache.put_many(MODEL, TEMPLATES, ["a", "b", "c"], _vectors(3))
    cache.get_many(MODEL, TEMPLATES, ["a"])  # a becomes most recent; b is now the oldest
    cache.put_many(MODEL, TEMPLATES, ["d"], _vectors(1))
    _, missing = cache.get_many(MODEL, TEMPLATES, ["a", "b", "c", "d"])
    assert missing == [1]
    assert cache.entries == 3 and cache.nbytes == 3 * size


def test_memory_bound_holds_under_varying_sizes() -> None:
    max_bytes = 20_000
    cache = TextEmbeddingCache(max_bytes)
    rng = np.random.default_rng(1)
    for step in range(300):
        dim = int(rng.integers(1, 600))
        count = int(rng.integers(1, 6))
        labels = [f"label-{step}-{i}" * int(rng.integers(1, 4)) for i in range(count)]
        cache.put_many(MODEL, TEMPLATES, labels, _vectors(count, dim, seed=step))
        assert cache.nbytes <= max_bytes
    assert cache.entries > 0
    # An entry too big for the whole cache is not stored (and evicts nothing).
    before = cache.entries
    cache.put_many(MODEL, TEMPLATES, ["huge"], _vectors(1, max_bytes // 4))
    assert cache.entries == before and cache.get_many(MODEL, TEMPLATES, ["huge"])[1] == [0]
    assert entry_bytes("ab", np.zeros(3, np.float32)) == 12 + 2 + ENTRY_OVERHEAD_BYTES


def test_drop_model_and_clear() -> None:
    sizes: list[int] = []
    cache = TextEmbeddingCache(1 << 20, on_size=sizes.append)
    cache.put_many(MODEL, TEMPLATES, ["a", "b"], _vectors(2))
    cache.put_many("lit_demo:4", TEMPLATES, ["a"], _vectors(1))
    assert cache.drop_model(MODEL) == 2
    assert cache.entries == 1 and cache.nbytes == entry_bytes("a", _vectors(1)[0])
    assert cache.get_many("lit_demo:4", TEMPLATES, ["a"])[1] == []
    cache.clear()
    assert (cache.entries, cache.nbytes) == (0, 0)
    assert sizes == [2, 3, 1, 0]


def test_thread_safety_smoke() -> None:
    size = entry_bytes("label-00", _vectors(1, 8)[0])
    cache = TextEmbeddingCache(40 * size)
    errors: list[BaseException] = []
    rounds, per_call = 150, 5

    def worker(seed: int) -> None:
        try:
            rng = np.random.default_rng(seed)
            for _ in range(rounds):
                labels = [f"label-{int(i):02d}" for i in rng.integers(0, 60, per_call)]
                found, missing = cache.get_many(MODEL, TEMPLATES, labels)
                assert len(found) + len(missing) == per_call
                if missing:
                    cache.put_many(MODEL, TEMPLATES, [labels[i] for i in missing], _vectors(len(missing), 8))
                assert cache.nbytes <= 40 * size
        except BaseException as error:  # reported to the main thread
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert cache.hits + cache.misses == 8 * rounds * per_call
    assert cache.entries <= 40 and cache.nbytes == cache.entries * size


def test_import_loads_no_torch() -> None:
    code = (
        "import sys, service.text_cache, service.label_store; "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'training'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=Path(__file__).parents[1])
