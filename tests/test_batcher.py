"""The dynamic batcher and the provider choice, without HTTP."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.batcher import Batcher, QueueFull
from service.onnx_backend import ProviderError, choose_providers


def run_batcher(test, **options):
    async def main():
        sizes: list[int] = []
        calls = threading.Lock()

        def double(batch: np.ndarray) -> np.ndarray:
            with calls:
                return batch * 2

        pool = ThreadPoolExecutor(1)
        batcher = Batcher(options.pop("run", double), pool, on_batch=sizes.append, **options)
        batcher.start()
        try:
            return await test(batcher, sizes)
        finally:
            await batcher.stop()
            pool.shutdown()

    return asyncio.run(main())


def test_concurrent_requests_share_batches_and_get_their_own_rows() -> None:
    async def test(batcher: Batcher, sizes: list[int]):
        items = [np.full((1, 3), i, dtype=np.float32) for i in range(20)]
        results = await asyncio.gather(*(batcher.submit(x) for x in items))
        for i, result in enumerate(results):
            assert np.array_equal(result, np.full((1, 3), 2 * i))
        assert sum(sizes) == 20 and max(sizes) > 1
        return sizes

    sizes = run_batcher(test, max_batch=8, max_wait_s=0.05, max_queue=100)
    assert all(size <= 8 for size in sizes)


def test_a_full_queue_refuses_at_once() -> None:
    async def test(batcher: Batcher, sizes):
        with pytest.raises(QueueFull):
            await batcher.submit(np.zeros((5, 2), dtype=np.float32))
        assert batcher.depth == 0

    run_batcher(test, max_batch=8, max_wait_s=0.01, max_queue=4)


def test_a_failing_batch_fails_its_callers_and_the_worker_lives_on() -> None:
    failures = iter([True, False])

    def flaky(batch: np.ndarray) -> np.ndarray:
        if next(failures):
            raise RuntimeError("encoder down")
        return batch + 1

    async def test(batcher: Batcher, sizes):
        with pytest.raises(RuntimeError, match="encoder down"):
            await batcher.submit(np.zeros((1, 2), dtype=np.float32))
        assert np.array_equal(await batcher.submit(np.zeros((1, 2), dtype=np.float32)), np.ones((1, 2)))

    run_batcher(test, run=flaky, max_batch=4, max_wait_s=0.0, max_queue=10)


def test_provider_choice() -> None:
    cpu, cuda = "CPUExecutionProvider", "CUDAExecutionProvider"
    assert choose_providers(["auto"], [cpu]) == [cpu]
    assert choose_providers(["auto"], [cuda, cpu]) == [cuda, cpu]
    assert choose_providers(["cpu"], [cuda, cpu]) == [cpu]
    with pytest.raises(ProviderError, match="cuda was requested"):
        choose_providers(["cuda"], [cpu])
    with pytest.raises(ProviderError, match="unknown provider"):
        choose_providers(["rocm"], [cpu])
