"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` on ``LIT_GRPC_PORT``, what
``tritonclient.grpc`` and KServe's gRPC clients call, beside the /v2 HTTP routes.

Off by default (``LIT_GRPC_PORT=0``). grpcio and Triton's generated code (``tritonclient.grpc.service_pb2``
and ``service_pb2_grpc``, the ``triton`` extra) are imported only when it is on, so a gateway without them
runs as long as it stays off. The ``grpc.aio`` server shares the HTTP server's event loop and
:class:`Gateway`, and answers through the same functions as the HTTP routes (service/kserve_models.py):
the same models, checks, messages and numbers.

ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer are served; every other
RPC of the service answers UNIMPLEMENTED. With ``LIT_API_KEYS`` every RPC but the three probes needs the
metadata ``authorization: Bearer <key>`` or ``x-api-key: <key>``. An :class:`ApiError` ends the RPC with
the status code of :data:`STATUS_CODES` (by its HTTP status), its message, and our error code in the
trailing metadata ``x-error-code``; anything else is logged and INTERNAL, its traceback never sent.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from service.errors import ApiError, api_error
from service.gateway import Gateway
from service.guards import check_key
from service.kserve_models import admit, describe, infer, readiness, server_metadata
from service.kserve_protobuf import infer_response, read_infer_request
from service.settings import Settings

if TYPE_CHECKING:
    import grpc
    from grpc import aio

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
KEY_HINT = "send a valid key in the metadata as 'authorization: Bearer <key>' or 'x-api-key: <key>'"
STOP_GRACE_S = 0.5  # for RPCs in flight at shutdown, after HTTP has drained; then they are cancelled
# grpc.StatusCode names by the HTTP status of our error codes (service/errors.py); other statuses: INTERNAL
STATUS_CODES = {
    400: "INVALID_ARGUMENT", 413: "INVALID_ARGUMENT", 415: "INVALID_ARGUMENT", 422: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE",
    501: "UNIMPLEMENTED", 504: "DEADLINE_EXCEEDED",
}  # fmt: skip
Handler = Callable[[Any], Awaitable[Any]]


def load_protocol() -> tuple[Any, Any]:
    """Triton's generated ``service_pb2`` and ``service_pb2_grpc``; a clear error without them."""
    try:
        return (
            importlib.import_module("tritonclient.grpc.service_pb2"),
            importlib.import_module("tritonclient.grpc.service_pb2_grpc"),
        )
    except (ImportError, RuntimeError) as exc:  # tritonclient.grpc raises RuntimeError without grpcio
        raise RuntimeError(
            f"LIT_GRPC_PORT is set, but gRPC needs grpcio and tritonclient, which the 'triton' extra brings: "
            f"pip install '.[triton]' (or leave LIT_GRPC_PORT unset). {type(exc).__name__}: {exc}"
        ) from exc


def listen_address(host: str, port: int) -> str:
    """``host:port`` as gRPC takes it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class GrpcServer:
    """The gRPC server of one gateway: built (and its modules imported) before the model loads, so a missing
    extra fails the start at once; started once the gateway is, stopped before it stops."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pb2, self.pb2_grpc = load_protocol()
        self.server: aio.Server | None = None

    async def start(self, gw: Gateway) -> None:
        from grpc import aio

        server = aio.server(
            options=[
                # a bigger message is RESOURCE_EXHAUSTED, from grpc itself
                ("grpc.max_receive_message_length", self.settings.max_body_bytes),
                ("grpc.so_reuseport", 0),  # a port in use is an error, not a second server sharing it
            ]
        )
        self.pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self._servicer(gw), server)
        address = listen_address(self.settings.host, self.settings.grpc_port)
        try:
            server.add_insecure_port(address)
        except RuntimeError as exc:
            raise RuntimeError(f"gRPC cannot listen on {address} (LIT_HOST, LIT_GRPC_PORT): {exc}") from exc
        await server.start()
        self.server = server
        log.info("Open Inference Protocol over gRPC on %s", address)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(STOP_GRACE_S)
            self.server = None

    def _servicer(self, gw: Gateway) -> Any:
        """The generated servicer with our six RPCs, and UNIMPLEMENTED for the others."""
        pb2, timeout_s = self.pb2, self.settings.request_timeout_s

        async def server_live(request: Any) -> Any:
            return pb2.ServerLiveResponse(live=True)

        async def server_ready(request: Any) -> Any:
            reason, _ = await gw.readiness()
            return pb2.ServerReadyResponse(ready=reason is None)

        async def model_ready(request: Any) -> Any:
            try:  # as tritonclient.http's is_model_ready reads a 404 or 503: not ready
                await readiness(gw, request.name, request.version or None)
            except ApiError:
                return pb2.ModelReadyResponse(ready=False)
            return pb2.ModelReadyResponse(ready=True)

        async def server_meta(request: Any) -> Any:
            return pb2.ServerMetadataResponse(**server_metadata().model_dump())

        async def model_metadata(request: Any) -> Any:
            described = await describe(gw, request.name, request.version or None)
            return pb2.ModelMetadataResponse(**described.model_dump())

        async def model_infer(request: Any) -> Any:
            target = admit(gw, request.model_name, request.model_version or None)
            parsed = read_infer_request(request, target.inputs, target.outputs)
            model, arrays = await infer(gw, target, parsed, timeout_s)
            return infer_response(pb2, request.model_name, str(model.version), parsed.id, arrays)

        servicer = self.pb2_grpc.GRPCInferenceServiceServicer()
        for name in dir(servicer):  # the generated default logs a traceback for each call; this one does not
            if not name.startswith("_") and callable(getattr(servicer, name)):
                setattr(servicer, name, _unimplemented(name))
        rpcs: dict[str, tuple[Handler, bool]] = {
            "ServerLive": (server_live, False),
            "ServerReady": (server_ready, False),
            "ModelReady": (model_ready, False),
            "ServerMetadata": (server_meta, True),
            "ModelMetadata": (model_metadata, True),
            "ModelInfer": (model_infer, True),
        }
        for name, (handler, keyed) in rpcs.items():
            setattr(servicer, name, self._rpc(gw, name, handler, keyed))
        return servicer

    def _rpc(
        self, gw: Gateway, name: str, handler: Handler, keyed: bool
    ) -> Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]:
        """``handler`` as an RPC: the key checked, errors turned into gRPC statuses, the call counted in
        ``lit_requests`` and timed in ``lit_request_duration_seconds`` (route ``/<service>/<rpc>``, status the
        HTTP status of the same answer)."""
        keys, route = self.settings.api_keys, f"/{SERVICE}/{name}"

        async def call(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            began = time.perf_counter()
            try:
                if keyed and keys:
                    metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
                    check_key(metadata.get("authorization"), metadata.get("x-api-key"), keys, KEY_HINT)
                response = await handler(request)
            except Exception as exc:  # CancelledError (client gone, shutdown) is not one: it propagates
                error = api_error(exc)
                if error.code == "internal_error":
                    log.exception("gRPC %s failed", name)
            else:
                _record(gw, route, 200, began)
                return response
            _record(gw, route, error.status, began)
            await context.abort(status_code(error.status), error.message, (("x-error-code", error.code),))

        return call


def _unimplemented(name: str) -> Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[None]]:
    async def call(request: Any, context: aio.ServicerContext[Any, Any]) -> None:
        await context.abort(
            status_code(501),
            f"{name} is not served here; this gateway serves ServerLive, ServerReady, ModelReady, "
            "ServerMetadata, ModelMetadata and ModelInfer",
        )

    return call


def status_code(status: int) -> grpc.StatusCode:
    """The ``grpc.StatusCode`` for an error answered with ``status`` over HTTP."""
    import grpc

    return grpc.StatusCode[STATUS_CODES.get(status, "INTERNAL")]


def _record(gw: Gateway, route: str, status: int, began: float) -> None:
    gw.metrics.requests.labels(route, str(status)).inc()
    gw.metrics.request_duration.labels(route).observe(time.perf_counter() - began)
