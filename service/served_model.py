"""One model version while it serves: its runtime, its image batcher, and the requests using it.

A request pins the version it starts on and finishes on it (decode size, encoders, label embeddings,
scores and the version named in the answer all come from that one version), so a hot swap never mixes
versions within a response. A retired version closes once its last request has finished.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from lit_bundle.manifest import Manifest
from service.batcher import Batcher
from service.runtime import ModelRuntime
from service.schemas import ModelRef


class ServedModel:
    def __init__(self, runtime: ModelRuntime, batcher: Batcher | None) -> None:
        self.runtime, self.batcher = runtime, batcher
        self._requests = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def key(self) -> str:
        return self.runtime.key

    @property
    def manifest(self) -> Manifest:
        return self.runtime.bundle.manifest

    def ref(self) -> ModelRef:
        return ModelRef(name=self.manifest.name, version=self.manifest.version)

    @contextmanager
    def pinned(self) -> Iterator[ServedModel]:
        """Count a request as using this version until the block ends."""
        self._requests += 1
        self._idle.clear()
        try:
            yield self
        finally:
            self._requests -= 1
            if not self._requests:
                self._idle.set()

    async def retire(self, grace_s: float) -> bool:
        """Wait up to ``grace_s`` for the requests still using this version, then close it. Returns
        whether they all finished (those still running after the grace time get 503/504)."""
        try:
            await asyncio.wait_for(self._idle.wait(), grace_s)
            drained = True
        except TimeoutError:
            drained = False
        if self.batcher is not None:
            await self.batcher.stop()
        await self.runtime.encoders.close()
        return drained
