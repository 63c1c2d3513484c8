"""Dynamic batching for the embedded backend: image requests from many clients run as one batch.

Requests wait at most ``max_wait_s`` for company (or until ``max_batch`` images are gathered). How many
may wait is bounded by the gateway's :class:`~service.backlog.Backlog`, not here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.device_handoff import concatenate


@dataclass
class _Job:
    items: np.ndarray
    future: asyncio.Future[Any] = field(repr=False)
    """Resolves to the job's embeddings: NumPy, or CuPy when they stay on the scoring GPU."""


class Batcher:
    def __init__(
        self,
        run: Callable[[np.ndarray], Awaitable[Any]],
        max_batch: int,
        max_wait_s: float,
        on_batch: Callable[[int], None] = lambda size: None,
    ) -> None:
        self._run = run
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def submit(self, items: np.ndarray) -> Any:
        """Encode ``items`` (a batch along axis 0) together with whatever else is waiting."""
        job = _Job(items, asyncio.get_running_loop().create_future())
        await self._queue.put(job)
        return await job.future

    async def _gather(self) -> list[_Job]:
        jobs = [await self._queue.get()]
        count = len(jobs[0].items)
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while count < self.max_batch:
            timeout = deadline - asyncio.get_running_loop().time()
            try:
                job = (
                    self._queue.get_nowait()
                    if timeout <= 0
                    else await asyncio.wait_for(self._queue.get(), timeout)
                )
            except (TimeoutError, asyncio.QueueEmpty):
                break
            jobs.append(job)
            count += len(job.items)
        return jobs

    async def _serve(self) -> None:
        while True:
            jobs = await self._gather()
            live = [job for job in jobs if not job.future.done()]  # cancelled callers are dropped
            if not live:
                continue
            batch = np.concatenate([job.items for job in live])
            try:
                outputs = []
                for start in range(0, len(batch), self.max_batch):
                    chunk = batch[start : start + self.max_batch]
                    self._on_batch(len(chunk))
                    outputs.append(await self._run(chunk))
                result = concatenate(outputs)
            except Exception as exc:  # the batch fails for every caller in it, the worker lives on
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            offset = 0
            for job in live:
                if not job.future.done():
                    job.future.set_result(result[offset : offset + len(job.items)])
                offset += len(job.items)
