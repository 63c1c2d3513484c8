# syntax=docker/dockerfile:1
# Images of the LiT zero-shot system. Build them with BuildKit (the default builder since Docker 23;
# `RUN --mount` needs it):
#
#   docker build --target gateway -t lit-gateway .                                   # ONNX Runtime on the CPU
#   docker build --target gateway --build-arg ONNXRUNTIME=gpu -t lit-gateway:gpu .   # onnxruntime-gpu, CuPy
#   docker build --target train -t lit-train .                                       # lit-train, torchrun
#
# gateway (the default target): the FastAPI gateway `lit-serve` with the extras `serve`, `triton` and
# exactly one ONNX Runtime extra, chosen by ONNXRUNTIME (`cpu` or `gpu`; the two provide the same module
# and must never share an environment). No torch. The committed model_repository/ is baked in at /models;
# mount another Triton model repository over it (read-only is enough). Label sets are written to
# /data/label_sets (a volume). Configure it with LIT_* variables (service/settings.py).
#
#   docker run --rm -p 8000:8000 lit-gateway
#   docker run --rm -p 8000:8000 -v "$PWD/model_repository:/models:ro" -v lit-labels:/data lit-gateway
#   docker run --rm -p 8000:8000 --gpus all lit-gateway:gpu
#
# ONNXRUNTIME=gpu builds on CUDA_IMAGE, NVIDIA's CUDA 13.0 base image (Ubuntu 24.04, whose Python is 3.12; the
# project needs >= 3.11). The gpu extra brings the CUDA 13 libraries as NVIDIA's wheels, in the versions
# onnxruntime-gpu's own `cuda` and `cudnn` extras ask for (cudart, cuBLAS, cuFFT, cuRAND, NVRTC, cuDNN 9):
# ONNX Runtime loads them with onnxruntime.preload_dlls() and CuPy (cupy-cuda13x) finds them, headers
# included, with cuda-pathfinder, so no CUDA runtime or cuDNN image is needed (it would be a second copy of
# them, in versions pip does not see). The base image adds CUDA_VERSION and NVIDIA_REQUIRE_CUDA, with which
# the NVIDIA container runtime refuses to start the image on a driver too old for CUDA 13.0 (R580 or later)
# instead of the gateway failing at its first session. One CUDA major everywhere: onnxruntime-gpu 1.28+ is
# built for CUDA 13.0, and so are CuPy, the NVIDIA wheels, this image and Triton 25.10 (CUDA 13.0.2,
# docker-compose.yml), so one host driver serves both; scripts/check_cuda_major.py fails the build on any
# disagreement (and tests/test_cuda_major.py checks the pins). The TensorRT execution provider needs
# TensorRT's libraries, which this image does not carry: use Triton (`lit-train promote --tensorrt`) for
# TensorRT.
#
# train: `lit-train` with the extras `train` and `cpu` (torch 2.14.1 and torchvision 0.29.1 from PyPI,
# whose Linux x86_64 wheels bring CUDA and NCCL as nvidia-* wheels, so it trains on GPUs without a CUDA
# base image). torchrun is on PATH for multi-node jobs (the entrypoint is lit-train; override it):
#
#   docker run --rm -v lit-runs:/workspace/runs lit-train demo --out runs/demo
#   docker run --rm --gpus all --ipc=host --network=host --entrypoint torchrun lit-train \
#     --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST0:29500 \
#     -m training train -c configs/demo.yaml
#
# Both images run as the unprivileged user `lit` (uid:gid 10001:10001, numeric so that Kubernetes'
# runAsNonRoot can verify it). Host folders mounted into them must be readable (and, for outputs,
# writable) by that uid, or run with --user "$(id -u):$(id -g)" -e HOME=/tmp.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04
ARG ONNXRUNTIME=cpu

# ---- One base per ONNX Runtime extra: stage `cpu` or `gpu`, picked by ONNXRUNTIME -----------------------
FROM ${PYTHON_IMAGE} AS cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

FROM ${CUDA_IMAGE} AS gpu
ARG DEBIAN_FRONTEND=noninteractive
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends "python3=3.12.*" "python3-venv=3.12.*" \
    && rm -rf /var/lib/apt/lists/*

# ---- The source tree: only what the distribution `lit-zeroshot` is built from -------------------------
FROM scratch AS source
COPY pyproject.toml README.md /src/
COPY lit_bundle /src/lit_bundle
COPY service /src/service
COPY training /src/training

# ---- Training image -----------------------------------------------------------------------------------
FROM cpu AS train-builder
COPY --from=source /src /src
WORKDIR /src
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install ".[train,cpu]" \
    && /opt/venv/bin/pip check

FROM cpu AS train
LABEL org.opencontainers.image.title="lit-train" \
      org.opencontainers.image.description="LiT zero-shot training, evaluation and export"
RUN groupadd --gid 10001 lit \
    && useradd --uid 10001 --gid lit --create-home --home-dir /home/lit --shell /usr/sbin/nologin lit \
    && mkdir -p /workspace/runs \
    && chown -R 10001:10001 /workspace
COPY --from=train-builder /opt/venv /opt/venv
COPY training/configs /workspace/configs
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /workspace
USER 10001:10001
ENTRYPOINT ["lit-train"]
CMD ["--help"]

# ---- Gateway image (the default target) ---------------------------------------------------------------
FROM ${ONNXRUNTIME} AS gateway-builder
ARG ONNXRUNTIME
COPY --from=source /src /src
COPY scripts/check_cuda_major.py /src/scripts/
WORKDIR /src
# Fails the build if anything pulled torch in (the gateway never needs it), if the ONNX Runtime installed is
# not the one asked for, or if the GPU pieces (and the base image's CUDA_VERSION) disagree on the CUDA major.
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install ".[serve,triton,${ONNXRUNTIME}]" \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/python scripts/check_cuda_major.py --onnxruntime "${ONNXRUNTIME}" \
    && /opt/venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') and 'torch in')"
# Readable by the unprivileged user whatever the permissions in the build context were.
COPY model_repository /models
RUN chmod -R u=rwX,go=rX /models

FROM ${ONNXRUNTIME} AS gateway
ARG ONNXRUNTIME
LABEL org.opencontainers.image.title="lit-gateway" \
      org.opencontainers.image.description="LiT zero-shot image classification gateway (lit-serve)" \
      lit.onnxruntime="${ONNXRUNTIME}"
RUN groupadd --gid 10001 lit \
    && useradd --uid 10001 --gid lit --create-home --home-dir /home/lit --shell /usr/sbin/nologin lit \
    && mkdir -p /data/label_sets \
    && chown -R 10001:10001 /data
COPY --from=gateway-builder /opt/venv /opt/venv
COPY --from=gateway-builder /models /models
ENV PATH=/opt/venv/bin:$PATH \
    LIT_HOST=0.0.0.0 \
    LIT_PORT=8000 \
    LIT_REPOSITORY=/models \
    LIT_LABEL_STORE=/data/label_sets \
    LIT_TRT_CACHE_DIR=/data/trt-cache
VOLUME ["/data"]
WORKDIR /home/lit
USER 10001:10001
EXPOSE 8000
# Healthy = ready to serve (model loaded, backend answering); /healthz is the liveness probe.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", \
         "import os, urllib.request as u; u.urlopen(f'http://127.0.0.1:{os.getenv(\"LIT_PORT\", 8000)}/readyz', timeout=4)"]
ENTRYPOINT ["lit-serve"]
