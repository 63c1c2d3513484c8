"""Ready means warm: every batch size an encoder will see has run before the version takes traffic."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from harness.gateway import REPOSITORY
from service.buckets import batch_buckets, pad_to_bucket
from service.encoders import TEXT_BATCH
from service.gateway import Gateway
from service.metrics import Metrics
from service.onnx_backend import OnnxEncoders
from service.settings import Settings


def test_buckets_and_padding() -> None:
    assert batch_buckets(1) == (1,)
    assert batch_buckets(32) == (1, 2, 4, 8, 16, 32)
    assert batch_buckets(24) == (1, 2, 4, 8, 16, 24)
    with pytest.raises(ValueError):
        batch_buckets(0)
    batch = np.arange(3 * 2, dtype=np.uint8).reshape(3, 2) + 1
    padded = pad_to_bucket(batch, (1, 2, 4, 8))
    assert padded.shape == (4, 2) and np.array_equal(padded[:3], batch) and not padded[3].any()
    assert pad_to_bucket(batch[:2], (1, 2, 4)) is not None and pad_to_bucket(batch[:2], (1, 2, 4)).shape == (
        2,
        2,
    )
    assert pad_to_bucket(batch, (1, 2)).shape == (3, 2)  # larger than every bucket: as it is


class Recorder:
    """Wraps OnnxEncoders: records every call's batch size and whether the gateway was serving then."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, compiles_shapes: bool) -> None:
        self.image: list[tuple[int, bool]] = []
        self.text: list[tuple[int, int, bool]] = []
        self.gateway: Gateway | None = None
        encode_images, encode_texts = OnnxEncoders.encode_images, OnnxEncoders.encode_texts
        recorder = self

        async def images(self: OnnxEncoders, pixels: np.ndarray) -> np.ndarray:
            recorder.image.append((len(pixels), recorder.serving))
            return await encode_images(self, pixels)

        async def texts(self: OnnxEncoders, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            recorder.text.append((*ids.shape, recorder.serving))
            return await encode_texts(self, ids, mask)

        monkeypatch.setattr(OnnxEncoders, "encode_images", images)
        monkeypatch.setattr(OnnxEncoders, "encode_texts", texts)
        if compiles_shapes:  # what CUDA or TensorRT sessions set; the CPU ones here stand in
            init = OnnxEncoders.__init__

            def accelerated(self: OnnxEncoders, *args, **kwargs) -> None:
                init(self, *args, **kwargs)
                self.compiles_shapes = True

            monkeypatch.setattr(OnnxEncoders, "__init__", accelerated)

    @property
    def serving(self) -> bool:
        return self.gateway is not None and any(h.served for h in self.gateway.models.hosts.values())


@pytest.mark.parametrize("compiles_shapes", [False, True])
def test_the_gateway_is_ready_only_after_every_batch_size_has_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compiles_shapes: bool
) -> None:
    recorder = Recorder(monkeypatch, compiles_shapes)
    settings = Settings(
        repository=REPOSITORY, label_store=str(tmp_path / "sets"), model_poll_s=0, max_batch_size=8
    )

    async def scenario() -> list[int]:
        gateway = Gateway(settings, Metrics())
        recorder.gateway = gateway
        await gateway.start()
        try:
            assert await gateway.readiness() == (None, {"lit_demo": "ready"})
            served = gateway.models.host(None).served
            assert served is not None and served.batcher is not None
            warm = len(recorder.image)
            embeddings = await served.batcher.submit(np.zeros((3, 64, 64, 3), dtype=np.uint8))
            assert embeddings.shape[0] == 3  # padding rows never reach the caller
            return [size for size, _ in recorder.image[warm:]]
        finally:
            await gateway.stop()

    after_ready = asyncio.run(scenario())
    warmed = [size for size, serving in recorder.image if not serving]
    assert all(not serving for _, _, serving in recorder.text)  # no text call at all while serving here
    length = 16  # the committed demo model's context length
    if compiles_shapes:
        assert warmed == [1, 2, 4, 8]
        assert [(b, n) for b, n, _ in recorder.text] == [(b, length) for b in batch_buckets(TEXT_BATCH)]
        assert after_ready == [4]  # 3 images padded to the bucket of 4
    else:
        assert warmed == [1, 8]
        assert [(b, n) for b, n, _ in recorder.text] == [(1, length)]
        assert after_ready == [3]
