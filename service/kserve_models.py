"""The protocol models of the Open Inference Protocol (KServe v2), whatever the transport (HTTP or gRPC).

Each served model NAME is two protocol models (bundle names never hold a dot, so neither collides):

- ``NAME``, zero-shot classification: inputs ``images`` BYTES [N] (encoded image files), ``labels`` BYTES [L]
  (UTF-8; or the request parameter ``label_set``) and optionally ``templates`` BYTES [T]; output ``scores``
  FP32 [N, L], each row the probabilities in the labels' order, as ``/v1/classify`` scores them.
- ``NAME.embed``, embeddings: inputs ``images`` BYTES [N] and/or ``texts`` BYTES [M]; outputs
  ``image_embeddings`` FP32 [N, D] and/or ``text_embeddings`` FP32 [M, D], both by one model version.

A transport parses its request into a :class:`~service.kserve_tensors.Request` against the specs
:func:`admit` gives, then :func:`infer` computes the outputs: one path for both, so they cannot drift.
Nothing here knows about HTTP or gRPC; errors are :class:`ApiError`, which each transport answers its way.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

import numpy as np

from service.errors import ApiError, within
from service.gateway import Gateway
from service.kserve_schemas import ModelMetadata, ModelReady, ServerMetadata, TensorMetadata, TensorSpec
from service.kserve_tensors import Request, invalid
from service.schemas import ModelRef

EMBED = ".embed"
IMAGES, LABELS, TEMPLATES, TEXTS = (
    TensorSpec(n, "BYTES", (-1,)) for n in ("images", "labels", "templates", "texts")
)
CLASSIFY_INPUTS = (IMAGES, LABELS, TEMPLATES)
EMBED_INPUTS = (IMAGES, TEXTS)
EMBED_SOURCES = {"image_embeddings": "images", "text_embeddings": "texts"}  # output -> the input it embeds
EXTENSIONS = ["binary_tensor_data", "parameters"]
Arrays = dict[str, np.ndarray]


def classify_outputs() -> tuple[TensorSpec, ...]:
    return (TensorSpec("scores", "FP32", (-1, -1)),)


def embed_outputs(dim: int = -1) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(name, "FP32", (-1, dim)) for name in EMBED_SOURCES)


def server_version() -> str:
    try:
        return metadata.version("lit-zeroshot")
    except metadata.PackageNotFoundError:
        return "0"


def server_metadata() -> ServerMetadata:
    return ServerMetadata(name="lit-zeroshot", version=server_version(), extensions=EXTENSIONS)


def model_of(gw: Gateway, name: str) -> tuple[str, bool]:
    """The served model behind a protocol model name, and whether it is the ``.embed`` one."""
    base, embed = (name.removesuffix(EMBED), True) if name.endswith(EMBED) else (name, False)
    if not gw.models.hosts:
        gw.models.host(base)  # 503 not_ready: no model discovered (yet)
    if base not in gw.models.hosts:
        served = ", ".join(f"{n}, {n}{EMBED}" for n in gw.models.hosts)
        raise ApiError("unknown_model", f"no model named {name[:80]!r}; this gateway serves {served}")
    return base, embed


def check_version(name: str, version: str | None, served: int | None) -> None:
    """404 for a version other than the served one; 503 while no version is loaded to compare with."""
    if version is None:
        return
    if served is None:
        raise ApiError("not_ready", f"model {name!r} is not loaded; its version is known once it is")
    if version != str(served):
        raise ApiError(
            "unknown_model",
            f"model {name!r} has no version {version[:20]!r} here; it serves version {served} "
            f"(use /v2/models/{name}/versions/{served}/... or leave the version out)",
        )


async def describe(gw: Gateway, name: str, version: str | None) -> ModelMetadata:
    base, embed = model_of(gw, name)
    info = await gw.info(base)
    check_version(name, version, info.version)
    inputs, outputs = (EMBED_INPUTS, embed_outputs(info.embed_dim or -1)) if embed else (
        CLASSIFY_INPUTS, classify_outputs()
    )  # fmt: skip
    return ModelMetadata(
        name=name,
        versions=[] if info.version is None else [str(info.version)],
        platform="lit_embedding" if embed else "lit_zeroshot",
        inputs=[TensorMetadata(**spec.metadata()) for spec in inputs],
        outputs=[TensorMetadata(**spec.metadata()) for spec in outputs],
    )


async def readiness(gw: Gateway, name: str, version: str | None) -> ModelReady:
    host = gw.models.host(model_of(gw, name)[0])
    reason = await host.readiness()
    served = host.served
    if served is not None:
        check_version(name, version, served.manifest.version)
    if reason is not None:
        raise ApiError("not_ready", f"model {name!r} is not ready: {reason}")
    return ModelReady(name=name, ready=True)


@dataclass(frozen=True)
class Target:
    """An inference request's protocol model, admitted: what it names and the tensors it takes and gives."""

    name: str
    version: str | None
    model: str  # the served model
    embed: bool
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


def admit(gw: Gateway, name: str, version: str | None) -> Target:
    """The model, its version and room for the work checked before the request's tensors are even read:
    a wrong name, a wrong version or a full backlog costs no parsing."""
    base, embed = model_of(gw, name)
    served = gw.models.hosts[base].served
    if served is not None:  # an unloaded model loads first; its version is checked after
        check_version(name, version, served.manifest.version)
    gw.check_room()
    inputs, outputs = (EMBED_INPUTS, embed_outputs()) if embed else (CLASSIFY_INPUTS, classify_outputs())
    return Target(name, version, base, embed, inputs, outputs)


async def infer(gw: Gateway, target: Target, request: Request, timeout_s: float) -> tuple[ModelRef, Arrays]:
    """The outputs ``request`` asks for (in the order it names them), and the model version that computed
    them; 504 after ``timeout_s``."""
    work = embeddings(gw, target.model, request) if target.embed else scores(gw, target.model, request)
    model, arrays = await within(work, timeout_s)
    check_version(target.name, target.version, model.version)  # a new version may have taken over meanwhile
    return model, {output: arrays[output] for output in request.outputs if output in arrays}


async def scores(gw: Gateway, model: str, request: Request) -> tuple[ModelRef, Arrays]:
    label_set = request.parameters.get("label_set")
    if label_set is not None and not isinstance(label_set, str):
        raise invalid("parameter label_set must be a string: the name of a registered label set")
    if "images" not in request.inputs:
        raise invalid("missing input 'images': send the encoded image files as BYTES [N]")
    images = request.inputs["images"].images()
    labels = request.inputs["labels"].texts() if "labels" in request.inputs else None
    templates = request.inputs["templates"].texts() if "templates" in request.inputs else None
    if templates == []:
        raise invalid("input 'templates' is empty: send at least one, or leave it out for the model's own")
    result = await gw.scores(images, labels, label_set, templates, model)
    probabilities = result.probabilities
    if labels is not None and result.labels != labels:  # stripped and made unique: one column per label sent
        column = {label: i for i, label in enumerate(result.labels)}
        probabilities = probabilities[:, [column[label.strip()] for label in labels]]
    return result.model, {"scores": probabilities}


async def embeddings(gw: Gateway, model: str, request: Request) -> tuple[ModelRef, Arrays]:
    if not request.inputs:
        raise invalid("send an 'images' input (encoded image files), a 'texts' input (UTF-8) or both")
    for output, source in EMBED_SOURCES.items():
        tensor = request.inputs.get(source)
        if tensor is None and request.named_outputs and output in request.outputs:
            raise invalid(
                f"output {output!r} needs the input {source!r}: send it, or do not ask for {output!r}"
            )
        if tensor is not None and not tensor.elements:
            code = "no_images" if source == "images" else "no_texts"
            raise ApiError(code, f"input {source!r} has no elements: send at least one, or leave it out")
    images = request.inputs["images"].images() if "images" in request.inputs else []
    texts = request.inputs["texts"].texts() if "texts" in request.inputs else []
    result = await gw.embeddings(texts, images, model)
    arrays = {"image_embeddings": result.images, "text_embeddings": result.texts}
    return result.model, {
        out: arrays[out] for out, source in EMBED_SOURCES.items() if source in request.inputs
    }
