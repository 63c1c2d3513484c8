"""Dynamic batching: image requests from many clients run through the encoder as one batch.

Requests wait at most ``max_wait_s`` for company (or until ``max_batch`` images are gathered). The queue
is bounded in images: a request that would overflow it is refused at once (429), so overload never turns
into unbounded memory growth.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np


class QueueFull(Exception):
    pass


@dataclass
class _Job:
    items: np.ndarray
    future: asyncio.Future = field(repr=False)


class Batcher:
    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        executor: Executor,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        on_batch: Callable[[int], None] = lambda size: None,
        on_depth: Callable[[int], None] = lambda depth: None,
    ) -> None:
        self._run, self._executor = run, executor
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self._on_batch, self._on_depth = on_batch, on_depth
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._waiting = 0
        self._worker: asyncio.Task | None = None

    @property
    def depth(self) -> int:
        """Images queued or running."""
        return self._waiting

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def submit(self, items: np.ndarray) -> np.ndarray:
        """Encode ``items`` (a batch along axis 0) together with whatever else is waiting."""
        if self._waiting + len(items) > self.max_queue:
            raise QueueFull(f"{self._waiting} images are already queued (limit {self.max_queue})")
        job = _Job(items, asyncio.get_running_loop().create_future())
        self._waiting += len(items)
        self._on_depth(self._waiting)
        await self._queue.put(job)
        try:
            return await job.future
        finally:
            self._waiting -= len(items)
            self._on_depth(self._waiting)

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
        loop = asyncio.get_running_loop()
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
                    outputs.append(await loop.run_in_executor(self._executor, self._run, chunk))
                result = np.concatenate(outputs)
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
