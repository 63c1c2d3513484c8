"""Text-embedding cache: label embeddings kept in host memory between requests.

Encoding labels is the costly part of a zero-shot request, and the same labels come back again and again,
so each label's prompt-ensembled embedding is cached under (model key, template set, label text). The model
key names the model version (e.g. ``"lit_demo:3"``), so embeddings of an old version are never served for
a new one; ``drop_model`` frees them when a version is retired. The cache is bounded by bytes, not entries,
because the embedding width depends on the model; it evicts the least recently used entry first.

Entries are read-only float32 copies in host memory: a caller can neither pin accelerator memory through
the cache nor corrupt a cached vector by writing into an array it was handed.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

# Accounted per entry on top of the vector's bytes: the key tuple, the ordered-dict node and the ndarray
# header come to roughly 250 bytes in CPython; the label text is added separately (UTF-8 length).
ENTRY_OVERHEAD_BYTES = 256

Counter = Callable[[int], None]
_Key = tuple[str, str, str]


def template_key(templates: Sequence[str]) -> str:
    """A short stable digest of a template set (order matters: it is part of what was encoded)."""
    payload = json.dumps(list(templates), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def entry_bytes(label: str, embedding: np.ndarray) -> int:
    """Bytes one entry is accounted for against ``max_bytes``."""
    return int(embedding.nbytes) + len(label.encode()) + ENTRY_OVERHEAD_BYTES


class TextEmbeddingCache:
    """Thread-safe LRU of label embeddings, bounded by accounted bytes (see ``entry_bytes``).

    The callbacks let the gateway update metrics (e.g. Prometheus counters) without this module knowing
    about them; they are called outside the lock (so a callback may use the cache) with the number of
    hits/misses of one lookup and the entry count after a change (under concurrency a size report may be
    momentarily stale).
    """

    def __init__(
        self,
        max_bytes: int,
        *,
        on_hit: Counter | None = None,
        on_miss: Counter | None = None,
        on_size: Counter | None = None,
    ) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._on_hit = on_hit
        self._on_miss = on_miss
        self._on_size = on_size
        self._lock = threading.Lock()
        self._entries: OrderedDict[_Key, np.ndarray] = OrderedDict()
        self._nbytes = 0
        self.hits = 0
        self.misses = 0

    @property
    def entries(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Accounted bytes in use (vectors plus per-entry overhead); never above ``max_bytes``."""
        return self._nbytes

    def get_many(
        self, model: str, templates: tuple[str, ...], labels: Sequence[str]
    ) -> tuple[dict[int, np.ndarray], list[int]]:
        """Cached embeddings by position in ``labels``, and the positions missing (to encode in one batch).

        Returned arrays are the cache's own read-only vectors; copy before modifying.
        """
        tkey = template_key(templates)
        found: dict[int, np.ndarray] = {}
        missing: list[int] = []
        with self._lock:
            for position, label in enumerate(labels):
                key = (model, tkey, label)
                vector = self._entries.get(key)
                if vector is None:
                    missing.append(position)
                else:
                    self._entries.move_to_end(key)
                    found[position] = vector
            self.hits += len(found)
            self.misses += len(missing)
        if found and self._on_hit is not None:
            self._on_hit(len(found))
        if missing and self._on_miss is not None:
            self._on_miss(len(missing))
        return found, missing

    def put_many(
        self, model: str, templates: tuple[str, ...], labels: Sequence[str], embeddings: np.ndarray
    ) -> None:
        """Store one embedding row per label (copied to float32), evicting least recently used entries.

        An entry larger than ``max_bytes`` on its own is not stored.
        """
        rows = np.asarray(embeddings)
        if rows.ndim != 2 or rows.shape[0] != len(labels):
            raise ValueError(f"expected {len(labels)} embedding rows (one per label), got {rows.shape}")
        tkey = template_key(templates)
        vectors = np.asarray(rows, dtype=np.float32)
        with self._lock:
            for label, vector in zip(labels, vectors, strict=True):
                key = (model, tkey, label)
                old = self._entries.pop(key, None)
                if old is not None:
                    self._nbytes -= entry_bytes(label, old)
                size = entry_bytes(label, vector)
                if size > self.max_bytes:
                    continue
                while self._nbytes + size > self.max_bytes:
                    self._evict_oldest()
                vector = vector.copy()  # own buffer: a row view would keep the whole batch alive
                vector.setflags(write=False)
                self._entries[key] = vector
                self._nbytes += size
            count = len(self._entries)
        self._report_size(count)

    def drop_model(self, model: str) -> int:
        """Remove every entry of one model key (a retired model version); returns how many."""
        with self._lock:
            doomed = [key for key in self._entries if key[0] == model]
            for key in doomed:
                self._nbytes -= entry_bytes(key[2], self._entries.pop(key))
            count = len(self._entries)
        self._report_size(count)
        return len(doomed)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._nbytes = 0
        self._report_size(0)

    def _evict_oldest(self) -> None:
        key, vector = self._entries.popitem(last=False)
        self._nbytes -= entry_bytes(key[2], vector)

    def _report_size(self, count: int) -> None:
        if self._on_size is not None:
            self._on_size(count)
