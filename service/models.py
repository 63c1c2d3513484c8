"""Every model the gateway serves: which ones, which answers requests that name none, and the memory budget.

The models are ``LIT_MODELS`` or, when unset, every bundle in the repository; ``LIT_DEFAULT_MODEL`` (else
the first of them) answers requests without a ``model``. With ``LIT_MAX_LOADED_MODELS`` set, loading one
more model than the budget unloads the least recently used other one (never the default), and a request
for an unloaded model loads it again. A model that fails to load is reported and the others serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from lit_bundle.repository import bundle_names
from service.encoders import BackendConfigError
from service.errors import ApiError
from service.metrics import Metrics
from service.model_host import ModelHost
from service.served_model import ServedModel
from service.settings import Settings

log = logging.getLogger(__name__)


class ModelHosts:
    def __init__(self, settings: Settings, metrics: Metrics, host: Callable[[str], ModelHost]) -> None:
        self.settings, self.metrics, self._host = settings, metrics, host
        self.hosts: dict[str, ModelHost] = {}
        self.default: str | None = settings.default_model
        self.discovery_error: str | None = None

    async def start(self) -> None:
        names = self.settings.models or await asyncio.to_thread(bundle_names, self.settings.repository)
        if not names:
            self.discovery_error = (
                f"no model bundles in {self.settings.repository}: export or import one there, "
                "or set LIT_REPOSITORY"
            )
            log.error(self.discovery_error)
            return
        self.default = self.default or names[0]
        if self.default not in names:
            raise BackendConfigError(
                f"LIT_DEFAULT_MODEL={self.default} is not one of the models served ({', '.join(names)})"
            )
        self.hosts = {name: self._host(name) for name in names}
        self.hosts[self.default].eager = True
        budget = self.settings.max_loaded_models or len(names)
        # The default first; then the others, up to the budget (the rest load on their first request).
        order = sorted(names, key=lambda n: n != self.default)
        for name in order[:budget]:
            await self.hosts[name].load()
            self.hosts[name].follow()
        for name in order[budget:]:
            self.hosts[name].unloaded = True
        self._report_loaded()
        log.info("serving %s (default %s)", ", ".join(names), self.default)

    async def stop(self) -> None:
        await asyncio.gather(*(host.stop() for host in self.hosts.values()))

    def host(self, name: str | None) -> ModelHost:
        """The named model's host, or the default's; 404 ``unknown_model`` for a name not served."""
        chosen = name or self.default
        found = self.hosts.get(chosen) if chosen else None
        if found is None:
            if not self.hosts:
                raise ApiError("not_ready", self.discovery_error or "no model is loaded yet")
            raise ApiError(
                "unknown_model", f"no model named {chosen!r}; this gateway serves {', '.join(self.hosts)}"
            )
        return found

    @contextlib.asynccontextmanager
    async def serving(self, name: str | None) -> AsyncIterator[ServedModel]:
        """The version of the named (or default) model that serves this request, loaded if it was not."""
        host = self.host(name)
        if host.unloaded:
            await self._load_within_budget(host)
        with host.pinned() as served:
            yield served

    async def _load_within_budget(self, host: ModelHost) -> None:
        if not await host.load():
            raise ApiError("not_ready", f"model {host.name} cannot be loaded: {host.load_error}")
        host.follow()
        budget = self.settings.max_loaded_models
        loaded = [h for h in self.hosts.values() if h.served is not None]
        idle = sorted(
            (h for h in loaded if h is not host and h.name != self.default), key=lambda h: h.last_used
        )
        for victim in idle[: max(0, len(loaded) - budget)] if budget else ():
            log.info("unloading %s (LIT_MAX_LOADED_MODELS=%d; least recently used)", victim.name, budget)
            self.metrics.model_unloads.labels(victim.name).inc()
            await victim.unload()
        self._report_loaded()

    def _report_loaded(self) -> None:
        self.metrics.models_loaded.set(sum(h.served is not None for h in self.hosts.values()))
