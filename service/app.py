"""The FastAPI application factory: errors, API keys, request ids, metrics, logs and health routes; and the
Open Inference Protocol's gRPC server beside it when ``LIT_GRPC_PORT`` is set."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import ApiError
from service.gateway import Gateway
from service.guards import BodyLimit, error_response, route_path
from service.hf_compat import build_hf_router
from service.kserve import build_kserve_router
from service.kserve_grpc import GrpcServer
from service.metrics import Metrics
from service.observe import Observe
from service.openai_compat import build_openai_router
from service.routes import allowed_methods, build_router
from service.schemas import ErrorBody, ModelRef, ReadyResponse
from service.settings import Settings
from service.web import build_web_router


def create_app(settings: Settings) -> FastAPI:
    """A gateway for ``settings``; the model loads when the app starts (see ``/readyz``)."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        grpc = GrpcServer(settings) if settings.grpc_port else None  # without its extra: fails before loading
        gw = Gateway(settings, metrics)
        app.state.gateway = gw
        await gw.start()
        try:
            if grpc is not None:
                await grpc.start(gw)
            yield
        finally:
            if grpc is not None:
                await grpc.stop()
            await gw.stop()

    app = FastAPI(
        title="LiT zero-shot image classification",
        version="1",
        lifespan=lifespan,
        description="Classify images into any labels, embed images and texts, and manage label sets.",
    )
    app.state.settings = settings
    app.state.metrics = metrics
    # BodyLimit sits inside Observe: its 413 is raised while the route reads the body, so FastAPI's
    # handler answers it and Observe counts and logs it like any other answer.
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(Observe, metrics=metrics, max_body_bytes=settings.max_body_bytes)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc, getattr(request.state, "request_id", None), path=route_path(request.scope))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        error = ApiError("invalid_body", f"{where}: {first['msg']} (see /docs)")
        return error_response(error, path=route_path(request.scope))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            exc.status_code, "http_error"
        )
        message, headers = str(exc.detail), exc.headers
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /docs for the API"
        elif exc.status_code == 405:  # Allow must list every method of the path; Starlette names one route's
            headers = {"Allow": allowed_methods(request)}
            message = f"{request.method} is not allowed on {request.url.path}; use {headers['Allow']}"
        error = ApiError(code, message, status=exc.status_code)
        return error_response(error, None, headers, route_path(request.scope))

    @app.get("/healthz", summary="Liveness: 200 while the process runs")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="Readiness: 200 once the default model is loaded and its backend answers; each model's state",
        response_model=None,
        responses={200: {"model": ReadyResponse}, 503: {"model": ErrorBody, "description": "not ready"}},
    )
    async def readyz(request: Request) -> JSONResponse:
        gw: Gateway = request.app.state.gateway
        reason, states = await gw.readiness()
        if reason is not None:  # the error says why the default is not ready; /v1/models shows every model
            return error_response(ApiError("not_ready", reason))
        default = await gw.info()
        ready = ReadyResponse(
            status="ready",
            model=ModelRef(name=default.name, version=default.version or 0),
            providers=default.providers,
            models=states,
        )
        return JSONResponse(ready.model_dump())

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(build_router())
    app.include_router(build_hf_router())
    app.include_router(build_kserve_router())
    app.include_router(build_openai_router())
    app.include_router(build_web_router())
    return app
