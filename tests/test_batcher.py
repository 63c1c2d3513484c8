"""The dynamic batcher, the backlog bound and the provider choice, without HTTP."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.backlog import Backlog, QueueFull
from service.batcher import Batcher


def run_batcher(test, **options):
    async def main():
        sizes: list[int] = []
        running = asyncio.Lock()

        async def double(batch: np.ndarray) -> np.ndarray:
            assert not running.locked(), "the batcher runs one batch at a time"
            async with running:
                await asyncio.sleep(0.01)
                return batch * 2

        batcher = Batcher(options.pop("run", double), on_batch=sizes.append, **options)
        batcher.start()
        try:
            return await test(batcher, sizes)
        finally:
            await batcher.stop()

    return asyncio.run(main())


def test_concurrent_requests_share_batches_and_get_their_own_rows() -> None:
    async def test(batcher: Batcher, sizes: list[int]):
        items = [np.full((1, 3), i, dtype=np.float32) for i in range(20)]
        results = await asyncio.gather(*(batcher.submit(x) for x in items))
        for i, result in enumerate(results):
            assert np.array_equal(result, np.full((1, 3), 2 * i))
        assert sum(sizes) == 20 and max(sizes) > 1
        return sizes

    sizes = run_batcher(test, max_batch=8, max_wait_s=0.05)
    assert all(size <= 8 for size in sizes)


def test_the_backlog_refuses_past_its_limit_and_frees_on_exit() -> None:
    depths: list[int] = []
    backlog = Backlog(4, on_depth=depths.append)
    with pytest.raises(QueueFull, match="limit 4"), backlog.hold(5):
        pass
    with backlog.hold(3):
        with pytest.raises(QueueFull, match="3 images"), backlog.hold(2):
            pass
        with backlog.hold(1):
            assert backlog.depth == 4
    with pytest.raises(RuntimeError), backlog.hold(2):  # an error inside still gives the room back
        raise RuntimeError("encoder down")
    assert backlog.depth == 0 and depths == [3, 4, 3, 0, 2, 0]


def test_a_failing_batch_fails_its_callers_and_the_worker_lives_on() -> None:
    failures = iter([True, False])

    async def flaky(batch: np.ndarray) -> np.ndarray:
        if next(failures):
            raise RuntimeError("encoder down")
        return batch + 1

    async def test(batcher: Batcher, sizes):
        with pytest.raises(RuntimeError, match="encoder down"):
            await batcher.submit(np.zeros((1, 2), dtype=np.float32))
        assert np.array_equal(await batcher.submit(np.zeros((1, 2), dtype=np.float32)), np.ones((1, 2)))

    run_batcher(test, run=flaky, max_batch=4, max_wait_s=0.0)
