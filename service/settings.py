"""Gateway settings from environment variables with the ``LIT_`` prefix (pydantic-settings).

Built by the caller (the console command or a test) and passed to ``create_app``: nothing is read at
import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIT_", extra="forbid")

    # What to serve
    repository: Path = Field(default=Path("model_repository"), description="Triton model repository")
    models: list[str] = Field(
        default_factory=list, description="bundles to serve (default: every bundle in the repository)"
    )
    default_model: str | None = Field(
        default=None, description="the model for requests that name none (default: the first of LIT_MODELS)"
    )
    max_loaded_models: int = Field(
        default=0,
        ge=0,
        description="models kept in memory at once (0 = all); the least recently used other than the default "
        "is unloaded and reloads on its next request",
    )
    label_sets_eager: bool = Field(
        default=False,
        description="encode every stored label set for every model as it loads (default: only for the "
        "default model; other models encode a set on its first use)",
    )
    backend: Literal["onnxruntime", "triton"] = "onnxruntime"
    providers: list[str] = Field(
        default=["auto"],
        description="ONNX Runtime providers in order: cpu, cuda, tensorrt, or auto (best installed)",
    )
    intra_op_threads: int = Field(default=0, ge=0, description="ONNX Runtime threads per session (0 = auto)")
    precision: Literal["auto", "fp32", "bf16", "int8"] = Field(
        default="auto",
        description="which encoder files run: auto (on the CPU provider, the bundle's gated int8 variant "
        "where the CPU has AVX2 or is aarch64, else fp32; fp32 on CUDA/TensorRT), fp32 (always the bundle's "
        "model.onnx), or int8/bf16 (that variant, else the model does not load); bf16 needs OpenVINO, which "
        "the gateway does not have yet",
    )
    scoring_device: Literal["auto", "cpu", "gpu"] = Field(
        default="auto",
        description="where label scores are computed: gpu (CuPy; an error if it cannot), cpu, or auto (the "
        "GPU when CuPy sees one and passes its self-test)",
    )
    decode_device: Literal["auto", "cpu", "gpu"] = Field(
        default="cpu",
        description="where baseline JPEGs are decoded and resized: gpu (nvImageCodec and CuPy; an error if "
        "it cannot), cpu, or auto (the GPU when it passes its self-test); other images decode on the CPU",
    )
    trt_cache_dir: Path = Field(
        default=Path(".cache/tensorrt"),
        description="TensorRT engine and timing caches (a persistent volume: engines are built once)",
    )

    model_poll_s: float = Field(
        default=5.0, ge=0, description="how often to look for a newly promoted version to swap in (0 = never)"
    )
    model_ready_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="how long a new version may take to become ready before it is refused",
    )

    # Triton backend (LIT_BACKEND=triton): Triton serves the same model repository as LIT_REPOSITORY
    triton_url: str = Field(default="127.0.0.1:8001", description="host:port, without a scheme")
    triton_protocol: Literal["grpc", "http"] = Field(default="grpc", description="grpc (8001) or http (8000)")
    triton_timeout_s: float = Field(default=10.0, gt=0, description="per call to Triton")
    triton_retries: int = Field(default=2, ge=0, description="extra attempts after a transient failure")
    triton_backoff_ms: float = Field(default=50.0, ge=0, description="first retry delay; doubles per retry")

    # Server
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="the Open Inference Protocol over gRPC on this port of LIT_HOST (0 = off; needs the "
        "triton extra: grpcio and tritonclient)",
    )
    api_keys: list[str] = Field(default_factory=list, description="if set, every /v1 route needs one")
    log_format: Literal["plain", "json"] = "plain"
    request_timeout_s: float = Field(default=30.0, gt=0)
    label_set_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="for PUT /v1/label-sets, which encodes every new label (1,000 labels x 7 templates: "
        "about 45 s for a ViT-B/32 CLIP on 2 CPU cores)",
    )
    shutdown_grace_s: float = Field(
        default=20.0,
        gt=0,
        description="on SIGTERM: stop accepting, let requests in flight finish, and exit within this "
        "many seconds (requests still running when it is nearly up are cancelled)",
    )

    # Batching of image encoder work (embedded backend; Triton batches with its own dynamic batcher)
    max_batch_size: int = Field(default=32, gt=0)
    max_batch_wait_ms: float = Field(default=10.0, ge=0)
    max_queue_images: int = Field(default=512, gt=0, description="images waiting beyond this get 429")
    decode_threads: int = Field(default=4, gt=0)
    decode_niceness: int = Field(
        default=19, ge=0, le=19, description="how much nicer than the encoder the decode threads run (Linux)"
    )

    # Caches and stores
    text_cache_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    label_store: str = Field(
        default="label_sets",
        description="folder, file:///dir, sqlite:///path.db, or redis://host:6379/0 (shared by replicas)",
    )

    # Limits
    max_body_bytes: int = 20 * 1024 * 1024
    max_images: int = 64
    max_image_pixels: int = 40_000_000
    max_labels: int = 4096
    max_labels_per_set: int = 50_000
    max_label_chars: int = 300
    max_texts: int = 4096

    @field_validator("triton_url")
    @classmethod
    def _host_and_port(cls, url: str) -> str:
        if "://" in url or "/" in url:
            raise ValueError(f"{url!r}: LIT_TRITON_URL is host:port without scheme or path, e.g. triton:8001")
        return url
