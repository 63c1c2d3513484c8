"""Prometheus metrics, registered on a registry owned by one app (no module-level collectors)."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.encoders import BackendUnavailable

T = TypeVar("T")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "lit_requests", "Requests (HTTP by route, gRPC by method)", ["route", "status"], registry=r
        )
        self.request_duration = Histogram(
            "lit_request_duration_seconds", "Request latency", ["route"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.images = Counter("lit_images", "Images received for encoding", ["model"], registry=r)
        self.batch_size = Histogram(
            "lit_batch_size",
            "Executed encoder batch sizes",
            ["model", "encoder"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("lit_queue_depth", "Images accepted and not yet answered", registry=r)
        self.queue_capacity = Gauge(
            "lit_queue_capacity", "Images that may be in progress before requests get 429", registry=r
        )
        self.inference_duration = Histogram(
            "lit_inference_duration_seconds",
            "Encoder call latency",
            ["model", "encoder"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.preprocess_duration = Histogram(
            "lit_preprocess_duration_seconds",
            "Decode and resize per image",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.decode_fallbacks = Counter(
            "lit_decode_fallbacks",
            "Images the GPU decoder left to the CPU (LIT_DECODE_DEVICE=gpu), by reason",
            ["reason"],
            registry=r,
        )
        self.cache_hits = Counter(
            "lit_text_cache_hits", "Label embeddings served from the cache", ["model"], registry=r
        )
        self.cache_misses = Counter(
            "lit_text_cache_misses", "Label embeddings that were encoded", ["model"], registry=r
        )
        self.cache_entries = Gauge("lit_text_cache_entries", "Label embeddings cached", registry=r)
        self.model_info = Gauge(
            "lit_model_info", "The version each model serves", ["name", "version", "backend"], registry=r
        )
        self.model_loads = Counter(
            "lit_model_loads",
            "Model versions served, or refused (damaged or unloadable: the old one keeps serving)",
            ["model", "outcome"],
            registry=r,
        )
        self.models_loaded = Gauge("lit_models_loaded", "Models loaded in memory now", registry=r)
        self.model_unloads = Counter(
            "lit_model_unloads", "Models unloaded to stay within LIT_MAX_LOADED_MODELS", ["model"], registry=r
        )
        self.backend_errors = Counter("lit_backend_errors", "Failed encoder calls", ["model"], registry=r)
        self.backend_up = Gauge(
            "lit_backend_up",
            "1 if the model's backend answered the last call or readiness check, else 0",
            ["model"],
            registry=r,
        )

    def add_model(self, model: str) -> None:
        """Export a model's counters at 0 from the start, so that ``increase()`` sees their first step."""
        for outcome in ("served", "refused"):
            self.model_loads.labels(model, outcome)
        self.backend_errors.labels(model)

    async def encoder_call(self, model: str, encoder: str, work: Awaitable[T]) -> T:
        """Await encoder work, timed, with failures counted and the backend marked down when it is."""
        began = time.perf_counter()
        try:
            result = await work
        except BackendUnavailable:
            self.backend_errors.labels(model).inc()
            self.backend_up.labels(model).set(0)
            raise
        except Exception:
            self.backend_errors.labels(model).inc()
            raise
        finally:
            self.inference_duration.labels(model, encoder).observe(time.perf_counter() - began)
        self.backend_up.labels(model).set(1)
        return result
