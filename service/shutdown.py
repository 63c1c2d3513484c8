"""Graceful shutdown of the gateway process within ``LIT_SHUTDOWN_GRACE_S`` (uvicorn, run by ``lit-serve``).

On SIGTERM (or Ctrl-C) uvicorn, within 0.1 s, closes the listening socket, so new connections are
refused (not answered with 503), and closes idle keep-alive connections, so a request a client writes
on one at that moment gets a reset or EOF and was never processed. Requests already being read or
served finish normally; their responses carry ``Connection: close``.

Requests still running when the drain window ends (the grace period less :data:`CLOSE_RESERVE_S`) are
cancelled. Left to uvicorn, a cancelled request would get a bare plain-text 500 and an error traceback in
the log; :class:`CutOff` answers it instead with the API's own error, 503 ``shutting_down`` with
``Retry-After`` (the request was not completed; a label-set PUT may or may not have been stored, and
repeating it is safe). Then the model is closed and the process exits, all within the grace period.
As uvicorn does, the process then ends by the signal it got (exit status 143 for SIGTERM in a shell).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ApiError
from service.guards import error_response, route_path

log = logging.getLogger(__name__)

CUT_OFF = ApiError(
    "shutting_down",
    "the server shut down before this request finished (LIT_SHUTDOWN_GRACE_S); it was not completed: "
    "send it again",
)

CLOSE_RESERVE_S = 1.0  # of the grace period, kept for closing the model and exiting once the drain ends
BACKSTOP_S = 0.5  # after the cut-off, uvicorn itself cancels whatever is still running


def drain_timeout(grace_s: float) -> float:
    """Seconds requests in flight get to finish after a shutdown signal, out of ``grace_s`` in all."""
    return max(grace_s - CLOSE_RESERVE_S, grace_s / 2)


class CutOff:
    """ASGI middleware: after :meth:`cut_off`, requests still running are cancelled and answered with
    503 ``shutting_down`` (unless their response has already begun)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.running: set[asyncio.Task[Any]] = set()
        self.cutting = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        if scope["type"] != "http" or task is None:
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        self.running.add(task)
        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            if not self.cutting or started:
                raise
            task.uncancel()
            cut_off = error_response(CUT_OFF, extra_headers={"Retry-After": "1"}, path=route_path(scope))
            await cut_off(scope, receive, send)
        finally:
            self.running.discard(task)

    def cut_off(self) -> None:
        self.cutting = True
        if self.running:
            log.warning(
                "shutdown: %d requests still running are cut off (503 shutting_down)", len(self.running)
            )
        for task in self.running:
            task.cancel("the shutdown grace period is up")


class GatewayServer(uvicorn.Server):
    """uvicorn's server, which cuts requests off through :class:`CutOff` once the drain window ends."""

    def __init__(self, config: uvicorn.Config, cut: CutOff, drain_s: float) -> None:
        super().__init__(config)
        self.cut, self.drain_s = cut, drain_s

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        timer = asyncio.get_running_loop().call_later(self.drain_s, self.cut.cut_off)
        try:
            await super().shutdown(sockets)
        finally:
            timer.cancel()


def serve(app: ASGIApp, host: str, port: int, grace_s: float) -> bool:
    """Run ``app`` until a shutdown signal, then drain and stop within ``grace_s``; False if it never
    started (the model's backend refused to load, say)."""
    cut = CutOff(app)
    drain = drain_timeout(grace_s)
    config = uvicorn.Config(
        cut,
        host=host,
        port=port,
        interface="asgi3",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=drain + BACKSTOP_S,  # type: ignore[arg-type]  # a float works
    )
    server = GatewayServer(config, cut, drain)
    server.run()
    return server.started
