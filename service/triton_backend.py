"""The Triton backend: encoder work goes to Triton Inference Server through tritonclient's asyncio API.

The gateway asks for the bundle's own version (the repository's active one), so it never scores text
embeddings of one version against image embeddings of another. One client (a pooled HTTP session or
one gRPC channel) is reused for every call. Each call has a timeout; transient failures (connection
refused or reset, UNAVAILABLE, 502/503/504, a model still loading) are retried with exponential
backoff, then reported as :class:`BackendUnavailable` (503). Triton's dynamic batcher batches
concurrent requests, so images are sent as they come, split only at the model's ``max_batch_size``.
Triton runs the files its own ``config.pbtxt`` names (``default_model_filename``: ``model.onnx``, or
``model.int8.onnx`` after ``lit-train promote --triton-precision int8``), so the gateway reports what
Triton's served config names (before Triton answers: what the shared repository's configs name) and an
explicit ``LIT_PRECISION`` must match it: a mismatch in the repository stops start-up, one in what Triton
serves fails readiness. ``bf16`` never runs on Triton.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any, Literal, TypeVar

import numpy as np

from lit_bundle.layout import MODEL_FILE
from lit_bundle.manifest import EncoderSpec, Manifest, variant
from lit_bundle.repository import Bundle
from lit_bundle.triton_files import configured_files, files_precision
from service.encoders import BackendConfigError, BackendError, BackendUnavailable
from service.precision import own_precision
from service.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

TRITON_DTYPES = {"uint8": "UINT8", "int32": "INT32", "int64": "INT64", "float16": "FP16", "float32": "FP32"}
TRANSIENT_STATUS = {"502", "503", "504", "StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED"}
NOT_LOADED = ("unknown model", "not ready", "not found", "is not available")
INT32_MAX = 2**31 - 1


def _client_module(protocol: str) -> Any:
    try:
        return importlib.import_module(f"tritonclient.{protocol}.aio")
    except ImportError as exc:
        raise BackendConfigError(
            f"LIT_BACKEND=triton needs tritonclient ({exc}): pip install '.[triton]'"
        ) from None


def _precision_problem(m: Manifest, files: dict[str, str], requested: str, loads: str) -> str | None:
    """Why ``files`` (model -> the file Triton loads) cannot serve ``LIT_PRECISION=requested``, or None."""
    served = files_precision(files)
    if served is not None and requested in ("auto", served):
        return None
    loads += " " + ", ".join(f"{model} from {file}" for model, file in files.items())
    promote = f"`lit-train promote {m.name} {m.version} --triton-precision"
    if served is None:
        return f"{loads}: not one precision. Fix: {promote} fp32` (or int8) regenerates both configs"
    promote += f" {requested}`"
    if requested not in ("fp32", "int8"):
        promote = "none on Triton, whose configs name model.onnx or model.int8.onnx (--triton-precision)"
    elif requested != "fp32" and variant(m, requested) is None:
        promote = f"`lit-train add-variant {m.name} --precision {requested}`, then {promote} on its version"
    return (
        f"LIT_PRECISION={requested} with LIT_BACKEND=triton, but {loads} ({served}). Fix: {promote}; or set "
        f"LIT_PRECISION=auto or LIT_PRECISION={served} (what Triton serves), or LIT_BACKEND=onnxruntime"
    )


class TritonEncoders:
    name = "triton"
    batches_images = True
    compiles_shapes = False  # Triton pads and warms its own (model_warmup, TensorRT profiles)

    def __init__(
        self,
        bundle: Bundle,
        url: str,
        protocol: Literal["grpc", "http"] = "grpc",
        timeout_s: float = 10.0,
        retries: int = 2,
        backoff_s: float = 0.05,
        precision: str = "auto",
    ) -> None:
        self.url, self.protocol = url, protocol
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.model_version = str(bundle.manifest.version)
        self._manifest, self._requested = bundle.manifest, precision
        # What the shared repository's configs name, until Triton's own configs are read.
        configured = files_precision(configured_files(bundle.repository, bundle.manifest.name))
        self._precision = configured if configured == "int8" else own_precision(bundle.manifest)
        self.image_spec = bundle.manifest.image_encoder
        self.text_spec = bundle.manifest.text_encoder
        self._api = _client_module(protocol)
        self._utils = importlib.import_module("tritonclient.utils")
        self._transient: tuple[type[BaseException], ...] = (TimeoutError, OSError)
        if protocol == "http":
            import aiohttp

            self._transient += (aiohttp.ClientError,)
            self.client = self._api.InferenceServerClient(url, conn_timeout=timeout_s)
        else:
            # Reconnect quickly after Triton restarts (gRPC's default backoff grows to two minutes).
            channel_args = [
                ("grpc.max_send_message_length", INT32_MAX),
                ("grpc.max_receive_message_length", INT32_MAX),
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
            ]
            self.client = self._api.InferenceServerClient(url, channel_args=channel_args)
        self._max_batch: dict[str, int] | None = None  # per model, read from Triton once it answers
        self._server_version: str | None = None

    @classmethod
    def from_settings(cls, bundle: Bundle, settings: Settings) -> TritonEncoders:
        files = configured_files(bundle.repository, bundle.manifest.name)
        loads = f"the configs in {bundle.repository} make Triton load"
        if settings.precision != "auto" and (
            problem := _precision_problem(bundle.manifest, files, settings.precision, loads)
        ):
            raise BackendConfigError(problem)
        return cls(
            bundle,
            settings.triton_url,
            settings.triton_protocol,
            settings.triton_timeout_s,
            settings.triton_retries,
            settings.triton_backoff_ms / 1000.0,
            settings.precision,
        )

    @property
    def where(self) -> str:
        return f"Triton at {self.url} ({self.protocol})"

    # Calls ------------------------------------------------------------------------------------------
    def _is_transient(self, exc: BaseException) -> bool:
        if isinstance(exc, self._transient):
            return True
        if isinstance(exc, self._utils.InferenceServerException):
            message = (exc.message() or "").lower()
            return exc.status() in TRANSIENT_STATUS or any(text in message for text in NOT_LOADED)
        return False

    @staticmethod
    def _describe(exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return "timed out"
        message = exc.message() if hasattr(exc, "message") and callable(exc.message) else str(exc)
        return (message or type(exc).__name__).strip().splitlines()[0][:300]

    async def _call(self, what: str, make: Callable[[], Awaitable[T]]) -> T:
        """``make()`` under the per-call timeout, retried with backoff while the failure is transient."""
        for attempt in range(self.retries + 1):
            try:
                return await asyncio.wait_for(make(), self.timeout_s)
            except Exception as exc:
                if not self._is_transient(exc):
                    if isinstance(exc, self._utils.InferenceServerException):
                        raise BackendError(f"{self.where} refused {what}: {self._describe(exc)}") from exc
                    raise
                reason = self._describe(exc)
                if attempt < self.retries:
                    await asyncio.sleep(self.backoff_s * 2**attempt)
        raise BackendUnavailable(
            f"{self.where} could not serve {what} after {self.retries + 1} attempts ({reason}): check that "
            f"Triton is running and has loaded version {self.model_version} of the bundle's models "
            "(LIT_TRITON_URL, and the same model repository as LIT_REPOSITORY)"
        )

    async def _fetch(self, what: str, method: Callable[..., Awaitable[Any]], *args: str) -> dict[str, Any]:
        """A metadata call, as a dict whichever the protocol (gRPC answers in protobuf)."""
        response = await self._call(what, lambda: method(*args))
        if isinstance(response, dict):
            return response
        from google.protobuf.json_format import MessageToDict

        return MessageToDict(response, preserving_proto_field_name=True)

    async def _check_models(self) -> dict[str, int]:
        """Compare what Triton serves with the bundle's manifest; learn each model's max batch size."""
        if self._max_batch is not None:
            return self._max_batch
        max_batch, loads = {}, {}
        for spec in (self.image_spec, self.text_spec):
            name, version = spec.triton_name, self.model_version
            metadata = await self._fetch(f"metadata of {name}", self.client.get_model_metadata, name, version)
            for kind, declared in (("inputs", spec.inputs), ("outputs", spec.outputs)):
                served = sorted((t["name"], t["datatype"]) for t in metadata.get(kind, []))
                expected = sorted((t.name, TRITON_DTYPES[t.dtype]) for t in declared)
                if served != expected:
                    raise BackendError(
                        f"{self.where} serves {name} v{version} with {kind} {served}, but the bundle "
                        f"declares {expected}: point Triton and the gateway at the same model repository"
                    )
            config = await self._fetch(f"config of {name}", self.client.get_model_config, name, version)
            config = config.get("config", config)  # gRPC wraps it
            max_batch[name] = int(config.get("max_batch_size", 0))
            loads[name] = config.get("default_model_filename") or MODEL_FILE
        if problem := _precision_problem(self._manifest, loads, self._requested, f"{self.where} loads"):
            raise BackendError(problem)
        precision = files_precision(loads) or "fp32"
        self._precision = precision if precision != "fp32" else own_precision(self._manifest)
        server = await self._fetch("server metadata", self.client.get_server_metadata)
        self._server_version = f"{server.get('name', 'triton')} {server.get('version', '?')}"
        log.info("%s serves %s: max batch sizes %s", self.where, self._server_version, max_batch)
        self._max_batch = max_batch
        return max_batch

    def _inputs(self, spec: EncoderSpec, arrays: dict[str, np.ndarray]) -> list[Any]:
        inputs = []
        for tensor in spec.inputs:
            array = np.ascontiguousarray(arrays[tensor.name], dtype=tensor.dtype)
            item = self._api.InferInput(tensor.name, list(array.shape), TRITON_DTYPES[tensor.dtype])
            item.set_data_from_numpy(array)
            inputs.append(item)
        return inputs

    async def _infer(self, spec: EncoderSpec, arrays: dict[str, np.ndarray]) -> np.ndarray:
        name, output = spec.triton_name, spec.output.name
        limit = (await self._check_models())[name] or len(next(iter(arrays.values())))
        size = len(next(iter(arrays.values())))

        async def infer_chunk(start: int) -> np.ndarray:
            chunk = {key: value[start : start + limit] for key, value in arrays.items()}
            outputs = [self._api.InferRequestedOutput(output)]
            result = await self._call(
                f"{name} v{self.model_version}",
                lambda: self.client.infer(
                    name, self._inputs(spec, chunk), model_version=self.model_version, outputs=outputs
                ),
            )
            embeddings: np.ndarray = result.as_numpy(output)
            return embeddings

        parts = await asyncio.gather(*(infer_chunk(start) for start in range(0, size, limit)))
        return np.concatenate(parts)

    def keep_image_embeddings_on(self, xp: ModuleType) -> bool:
        return False  # embeddings arrive over the network, in host memory

    async def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        return await self._infer(self.image_spec, {self.image_spec.inputs[0].name: pixels})

    async def encode_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return await self._infer(self.text_spec, {"input_ids": input_ids, "attention_mask": attention_mask})

    # Status -----------------------------------------------------------------------------------------
    async def readiness(self) -> str | None:
        probe = min(self.timeout_s, 2.0)
        try:
            if not await asyncio.wait_for(self.client.is_server_ready(), probe):
                return f"{self.where} is not ready (starting, or draining before it stops)"
            for spec in (self.image_spec, self.text_spec):
                name = spec.triton_name
                ready = await asyncio.wait_for(self.client.is_model_ready(name, self.model_version), probe)
                if not ready:
                    return (
                        f"{self.where} has not loaded {name} version {self.model_version}: load it there, "
                        "or promote that version in the shared model repository"
                    )
            await self._check_models()
        except (BackendError, BackendUnavailable) as exc:
            return str(exc)
        except Exception as exc:
            if not self._is_transient(exc):
                return f"{self.where} answered the readiness check with an error: {self._describe(exc)}"
            return f"{self.where} is not reachable ({self._describe(exc)}): start it, or fix LIT_TRITON_URL"
        return None

    def providers(self) -> list[str]:
        return [f"triton:{self.protocol}://{self.url}"]

    def version(self) -> str | None:
        return self._server_version

    def precision(self) -> str:
        return self._precision  # what Triton's config names: model.onnx (the bundle's own) or model.int8.onnx

    async def close(self) -> None:
        await self.client.close()
