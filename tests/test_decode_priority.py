"""Decode threads run niced below the encoder (service.gateway.lower_thread_priority)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from service.gateway import Gateway
from service.metrics import Metrics
from service.settings import Settings

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux-only")


def _own_niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.parametrize("niceness", [0, 7, 19])
def test_decode_pool_threads_take_the_configured_niceness(tmp_path: Path, niceness: int) -> None:
    base = _own_niceness()
    settings = Settings(decode_niceness=niceness, decode_threads=2, label_store=str(tmp_path / "sets"))
    gateway = Gateway(settings, Metrics())
    try:
        seen = {gateway.pipeline.pool.submit(_own_niceness).result(timeout=10) for _ in range(8)}
    finally:
        gateway.pipeline.pool.shutdown()
    assert seen == {min(19, base + niceness) if niceness else base}
    assert _own_niceness() == base  # the caller's thread is untouched
