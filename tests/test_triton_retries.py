"""The Triton backend's call policy (timeout, retries with backoff, error kinds), without a server.

The server-facing behaviour is covered against a real Triton in ``test_triton_backend.py``; here the
call itself is replaced, to pin down exactly how many attempts are made and how long they wait.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from tritonclient.utils import InferenceServerException

from harness.gateway import REPOSITORY
from lit_bundle.repository import load_bundle
from service.encoders import BackendError, BackendUnavailable
from service.triton_backend import TritonEncoders


def with_encoders(test, protocol: str = "grpc", **options):
    async def main():
        encoders = TritonEncoders(load_bundle(REPOSITORY), "127.0.0.1:1", protocol, **options)
        try:
            return await test(encoders)
        finally:
            await encoders.close()

    return asyncio.run(main())


class Flaky:
    """Fails with ``errors`` in turn, then answers ``"ok"``; records when each attempt came."""

    def __init__(self, *errors: BaseException, delay_s: float = 0.0) -> None:
        self.errors, self.delay_s, self.times = list(errors), delay_s, []

    async def __call__(self) -> str:
        self.times.append(time.monotonic())
        await asyncio.sleep(self.delay_s)
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_transient_failures_are_retried_with_doubling_backoff(protocol: str) -> None:
    flaky = Flaky(
        ConnectionRefusedError("refused"), InferenceServerException("down", status="StatusCode.UNAVAILABLE")
    )

    async def test(encoders: TritonEncoders):
        return await encoders._call("work", flaky)

    assert with_encoders(test, protocol, retries=2, backoff_s=0.05) == "ok"
    gaps = [b - a for a, b in zip(flaky.times, flaky.times[1:], strict=False)]
    assert len(flaky.times) == 3 and 0.05 <= gaps[0] < 0.09 and 0.1 <= gaps[1] < 0.15, gaps


def test_retries_run_out_into_backend_unavailable_naming_the_server() -> None:
    flaky = Flaky(*(ConnectionResetError("reset") for _ in range(5)))

    async def test(encoders: TritonEncoders):
        with pytest.raises(BackendUnavailable) as raised:
            await encoders._call("lit_demo_image v1", flaky)
        return str(raised.value)

    message = with_encoders(test, retries=2, backoff_s=0.0)
    assert len(flaky.times) == 3
    assert (
        "Triton at 127.0.0.1:1 (grpc) could not serve lit_demo_image v1 after 3 attempts (reset)" in message
    )


def test_each_attempt_has_a_timeout() -> None:
    flaky = Flaky(delay_s=1.0)

    async def test(encoders: TritonEncoders):
        began = time.monotonic()
        with pytest.raises(BackendUnavailable, match="timed out"):
            await encoders._call("work", flaky)
        return time.monotonic() - began

    took = with_encoders(test, timeout_s=0.05, retries=1, backoff_s=0.0)
    assert len(flaky.times) == 2 and took < 0.5


def test_a_refusal_is_not_retried_and_a_model_still_loading_is() -> None:
    refusal = Flaky(InferenceServerException("unexpected shape for input 'pixels'", status="400"))
    loading = Flaky(
        InferenceServerException("Request for unknown model: 'lit_demo_image' is not found", status="400")
    )

    async def test(encoders: TritonEncoders):
        with pytest.raises(BackendError, match="refused work: unexpected shape"):
            await encoders._call("work", refusal)
        return await encoders._call("work", loading)

    assert with_encoders(test, retries=2, backoff_s=0.0) == "ok"
    assert len(refusal.times) == 1 and len(loading.times) == 2


def test_a_bug_is_not_disguised_as_a_backend_error() -> None:
    async def test(encoders: TritonEncoders):
        with pytest.raises(TypeError):
            await encoders._call("work", Flaky(TypeError("a bug")))

    with_encoders(test)


def test_the_triton_url_is_host_and_port() -> None:
    from pydantic import ValidationError

    from service.settings import Settings

    assert Settings(triton_url="triton:8001").triton_url == "triton:8001"
    with pytest.raises(ValidationError, match="without scheme or path"):
        Settings(triton_url="http://triton:8001")
