"""Prometheus metrics, registered on a registry owned by one app (no module-level collectors)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("lit_requests", "HTTP requests", ["route", "status"], registry=r)
        self.request_duration = Histogram(
            "lit_request_duration_seconds", "Request latency", ["route"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.images = Counter("lit_images", "Images received for encoding", registry=r)
        self.batch_size = Histogram(
            "lit_batch_size", "Executed encoder batch sizes", ["encoder"], buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("lit_queue_depth", "Images accepted and not yet answered", registry=r)
        self.queue_capacity = Gauge(
            "lit_queue_capacity", "Images that may be in progress before requests get 429", registry=r
        )
        self.inference_duration = Histogram(
            "lit_inference_duration_seconds",
            "Encoder call latency",
            ["encoder"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.preprocess_duration = Histogram(
            "lit_preprocess_duration_seconds",
            "Decode and resize per image",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cache_hits = Counter("lit_text_cache_hits", "Label embeddings served from the cache", registry=r)
        self.cache_misses = Counter("lit_text_cache_misses", "Label embeddings that were encoded", registry=r)
        self.cache_entries = Gauge("lit_text_cache_entries", "Label embeddings cached", registry=r)
        self.model_info = Gauge(
            "lit_model_info", "The active model", ["name", "version", "backend"], registry=r
        )
        self.model_loads = Counter(
            "lit_model_loads",
            "Model versions served, or refused (damaged or unloadable: the old one keeps serving)",
            ["outcome"],
            registry=r,
        )
        for outcome in ("served", "refused"):  # exported from the start at 0, so increase() sees the first
            self.model_loads.labels(outcome)
        self.backend_errors = Counter("lit_backend_errors", "Failed encoder calls", registry=r)
        self.backend_up = Gauge(
            "lit_backend_up", "1 if the backend answered the last call or readiness check, else 0", registry=r
        )
