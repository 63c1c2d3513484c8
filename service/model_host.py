"""One served model, by name: its version's life cycle from load to retirement.

Loads the repository's active version (warm before it takes traffic), follows promotions (the new version
loads beside the old, encodes the stored label sets, then takes new requests; the old one retires once
its requests have finished), refuses a version that fails to load while the old one keeps serving,
unloads and reloads on demand (the gateway's memory budget), and says whether it is ready and why not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Iterator
from typing import Any, Literal

from lit_bundle.layout import config_path
from lit_bundle.repository import active_version
from service.encoders import BackendConfigError, BackendUnavailable
from service.errors import ApiError
from service.image_pipeline import ImagePipeline
from service.labels import Labels
from service.metrics import Metrics
from service.runtime import ModelRuntime
from service.schemas import ModelInfo
from service.served_model import ServedModel
from service.settings import Settings

log = logging.getLogger(__name__)

State = Literal["loading", "ready", "failed", "unloaded"]


class ModelHost:
    def __init__(
        self, name: str, settings: Settings, metrics: Metrics, pipeline: ImagePipeline, labels: Labels
    ) -> None:
        self.name, self.settings, self.metrics = name, settings, metrics
        self.pipeline, self.labels = pipeline, labels
        self.served: ServedModel | None = None
        self.load_error: str | None = None
        self.unloaded = False
        self.eager = settings.label_sets_eager  # the default model always encodes stored sets on load
        self.last_used = time.monotonic()
        self._refused: tuple[int, int] | None = None  # (version, config mtime) that failed to load
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()  # one load or swap at a time
        self._following = False
        metrics.add_model(name)

    @property
    def state(self) -> State:
        if self.served is not None:
            return "ready"
        if self.unloaded:
            return "unloaded"
        return "failed" if self.load_error else "loading"

    # Life cycle -------------------------------------------------------------------------------------
    async def load(self) -> bool:
        """Serve the active version; False (and ``load_error`` says why) when it cannot be loaded."""
        async with self._lock:
            if self.served is not None:
                return True
            try:
                runtime = await ModelRuntime.load(self.settings, self.name)
            except BackendConfigError:
                raise  # a misconfigured backend is an operator error: refuse to start, never fall back
            except Exception as exc:  # a missing or damaged bundle: the process stays up and says why
                self.load_error = f"{type(exc).__name__}: {exc}"
                self.metrics.model_loads.labels(self.name, "refused").inc()
                log.error("model %s not loaded: %s", self.name, self.load_error)
                with contextlib.suppress(Exception):
                    self._refused = self._promoted()
                return False
            self.unloaded = False
            self._switch_to(self.pipeline.serve(runtime))
            self._spawn(self._encode_label_sets(self.served))
            return True

    def follow(self) -> None:
        """Watch the repository for promotions of this model (every ``LIT_MODEL_POLL_S``)."""
        if self.settings.model_poll_s > 0 and not self._following:
            self._following = True
            self._spawn(self._follow_repository())

    async def unload(self) -> None:
        """Free the model's memory once its requests have finished; it loads again on demand."""
        async with self._lock:
            old, self.served, self.unloaded = self.served, None, True
        if old is not None:
            self._forget_info(old)
            await self._retire(old)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.served is not None:
            await self.served.retire(0)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _switch_to(self, new: ServedModel) -> ServedModel | None:
        old, self.served, self.load_error = self.served, new, None
        if old is not None:
            self._forget_info(old)
        self.metrics.model_info.labels(self.name, str(new.manifest.version), self.settings.backend).set(1)
        self.metrics.model_loads.labels(self.name, "served").inc()
        return old

    def _forget_info(self, old: ServedModel) -> None:
        self.metrics.model_info.remove(self.name, str(old.manifest.version), self.settings.backend)

    async def _follow_repository(self) -> None:
        while True:
            await asyncio.sleep(self.settings.model_poll_s)
            if self.unloaded:
                continue  # its next request loads whatever is active then
            try:
                wanted = await asyncio.to_thread(self._promoted)
            except Exception as exc:  # e.g. a config.pbtxt being rewritten by hand: look again later
                (log.warning if self.served else log.debug)("no active version of %s: %s", self.name, exc)
                continue
            if self.served is None:  # it failed to load: try again once the repository changes
                if wanted is not None and wanted != self._refused:
                    await self.load()
                continue
            current = self.served.manifest.version
            if wanted is None or wanted[0] == current or wanted == self._refused:
                continue
            try:
                async with self._lock:
                    await self._swap()
                self._refused = None
            except Exception as exc:
                self._refused = wanted
                self.metrics.model_loads.labels(self.name, "refused").inc()
                log.error(
                    "refused %s version %d: %s; still serving version %d",
                    self.name, wanted[0], f"{type(exc).__name__}: {exc}", current,
                )  # fmt: skip

    def _promoted(self) -> tuple[int, int] | None:
        """The active version and when its config was written (a rewrite retries a refused version)."""
        version = active_version(self.settings.repository, self.name)
        mtime = config_path(self.settings.repository, self.name).stat().st_mtime_ns
        return None if version is None else (version, mtime)

    async def _swap(self) -> None:
        runtime = await ModelRuntime.load(self.settings, self.name)
        new = self.pipeline.serve(runtime)
        try:
            deadline = time.monotonic() + self.settings.model_ready_timeout_s
            while (reason := await runtime.encoders.readiness()) is not None:
                if time.monotonic() > deadline:
                    raise BackendUnavailable(
                        f"not ready after {self.settings.model_ready_timeout_s:g} s: {reason}"
                    )
                await asyncio.sleep(0.5)
            if self.eager:
                await self.labels.encode_stored(new)
        except BaseException:
            await new.retire(0)
            raise
        old = self._switch_to(new)
        log.info("now serving %s version %d", self.name, new.manifest.version)
        if old is not None:
            self._spawn(self._retire(old))

    async def _retire(self, old: ServedModel) -> None:
        # Its requests end by their own timeouts at the latest: a label-set PUT may take the longer one.
        grace = max(self.settings.request_timeout_s, self.settings.label_set_timeout_s)
        if not await old.retire(grace):
            log.warning("%s version %d closed with requests still running", self.name, old.manifest.version)
        self.labels.forget(old)

    async def _encode_label_sets(self, served: ServedModel | None) -> None:
        if served is None:
            return
        while (reason := await served.runtime.encoders.readiness()) is not None:
            log.info("label sets for %s wait for the backend: %s", self.name, reason)
            await asyncio.sleep(1.0)
        if self.eager:
            await self.labels.encode_stored(served)

    # Requests ---------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def pinned(self) -> Iterator[ServedModel]:
        """The version a request uses from start to end (a swap meanwhile does not change it)."""
        served = self.served
        if served is None:
            raise ApiError(
                "not_ready", f"model {self.name} is not loaded ({self.load_error or 'still loading'})"
            )
        self.last_used = time.monotonic()
        with served.pinned():
            yield served

    async def readiness(self) -> str | None:
        """None when the model is loaded and its backend can serve it, else why not."""
        served = self.served
        if served is None:
            return self.load_error or ("unloaded (loads on its next request)" if self.unloaded else "loading")
        reason = await served.runtime.encoders.readiness()
        self.metrics.backend_up.labels(self.name).set(0 if reason else 1)
        return reason

    async def info(self) -> ModelInfo:
        served = self.served
        if served is None:
            return ModelInfo(name=self.name, state=self.state, error=self.load_error)
        encoders = served.runtime.encoders
        if encoders.version() is None:
            await self.readiness()  # the Triton backend learns the server's version when it first answers
        m = served.manifest
        return ModelInfo(
            name=m.name, version=m.version, state=self.state, backend=encoders.name,
            backend_version=encoders.version(), providers=encoders.providers(),
            precision=encoders.precision(), variants=[v.precision for v in m.variants], embed_dim=m.embed_dim,
            image_size=m.preprocess.size, loss=m.loss, templates=list(m.templates),
        )  # fmt: skip
