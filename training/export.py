"""Export encoders to ONNX as a verified, versioned bundle in a Triton model repository.

The image graph takes uint8 NHWC pixels (4x fewer bytes than float for Triton clients) and does the
float conversion and mean/std normalisation itself; both graphs end in L2 normalisation. Before a
version is published, ONNX Runtime's outputs are compared with torch's on real inputs; a bundle that
fails is never written. A float16 bundle keeps its numerically fragile nodes in float32 and is gated on
the execution provider it will run on (CUDA when ONNX Runtime has it), by cosine similarity and top-1.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from PIL import Image
from tokenizers import Tokenizer
from torch import nn
from tqdm import tqdm

from lit_bundle import PreprocessSpec, atomic
from lit_bundle.layout import (
    MODEL_FILE,
    TOKENIZER_FILE,
    encoder_root,
    relative_file,
    triton_model,
)
from lit_bundle.manifest import (
    EncoderSpec,
    EvaluationData,
    Manifest,
    TensorSpec,
    TextSpec,
)
from lit_bundle.preprocess import resize_and_crop
from lit_bundle.repository import active_version, promote, write_missing_configs
from lit_bundle.triton import TritonOptions
from training import onnx_graphs
from training.onnx_graphs import ExportError, check_cast_first
from training.publishing import publish_version
from training.variants import VariantOutcome, VariantRequest, build_variants

OPSET = 17
STAGING_PREFIX = ".staging-"  # versions being written; hidden from readers and from .dockerignore
FP32_TOLERANCE = 1e-4
TEXT_INPUTS = ["input_ids", "attention_mask"]
# A float16 bundle passes when every check image's and check text's embedding has at least this cosine
# similarity to torch's float32 one, and top-1 over the check texts is the same for every image.
FP16_MIN_COSINE = 0.999
# Where the float16 gate runs, best first: where the bundle will run. The CPU provider computes most
# float16 ops in float32 (it inserts casts around them), so it is the fallback, and it is recorded.
CPU = "CPUExecutionProvider"
FP16_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider", CPU)


class ImageGraph(nn.Module):
    """uint8 ``(B, S, S, 3)`` pixels -> L2-normalised embeddings, normalisation inside the graph."""

    def __init__(self, encoder: nn.Module, spec: PreprocessSpec) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1) * 255.0)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # Cast first: TensorRT takes a uint8 network input only when it feeds a Cast (see check_cast_first).
        x = (pixels.float().permute(0, 3, 1, 2) - self.mean) / self.std
        return F.normalize(self.encoder(x).float(), dim=-1)


class TextGraph(nn.Module):
    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encoder(input_ids, attention_mask).float(), dim=-1)


@dataclass
class ExportRequest:
    name: str
    image_encoder: nn.Module
    text_encoder: nn.Module
    tokenizer: Tokenizer
    context_length: int
    preprocess: PreprocessSpec
    loss: Literal["softmax", "sigmoid"]
    logit_scale: float
    logit_bias: float | None
    check_images: list[Image.Image]
    check_texts: list[str]
    templates: tuple[str, ...] = ("a photo of a {}.",)
    metrics: dict[str, float] = field(default_factory=dict)
    evaluation: tuple[EvaluationData, ...] = ()
    provenance: dict[str, str] = field(default_factory=dict)
    variants: VariantRequest | None = None


def image_batch(images: list[Image.Image], spec: PreprocessSpec) -> np.ndarray:
    """The uint8 NHWC batch a client sends to the image graph."""
    return np.stack([np.asarray(resize_and_crop(im.convert("RGB"), spec), dtype=np.uint8) for im in images])


def token_batch(tokenizer: Tokenizer, texts: list[str]) -> dict[str, np.ndarray]:
    encodings = tokenizer.encode_batch(texts)
    return {
        "input_ids": np.asarray([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.asarray([e.attention_mask for e in encodings], dtype=np.int64),
    }


@contextmanager
def _without_mha_fastpath() -> Iterator[None]:
    """nn.TransformerEncoder's inference fast path is one fused op that ONNX cannot express."""
    was = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(was)


def _export(
    module: nn.Module, args: tuple, path: Path, inputs: list[str], sequence_inputs: Sequence[str] = ()
) -> None:
    axes = {name: {0: "batch", **({1: "sequence"} if name in sequence_inputs else {})} for name in inputs}
    axes["embedding"] = {0: "batch"}
    with torch.no_grad(), _without_mha_fastpath():
        torch.onnx.export(
            module, args, str(path), input_names=inputs, output_names=["embedding"],
            dynamic_axes=axes, opset_version=OPSET, dynamo=False,
        )  # fmt: skip


def trim_padding(tokens: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drop the padding columns no text of the batch uses: what a dynamic-length encoder is fed."""
    longest = max(1, int(tokens["attention_mask"].sum(axis=1).max()))
    return {name: np.ascontiguousarray(array[:, :longest]) for name, array in tokens.items()}


def _padded_rows(tokens: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """The texts shorter than the context (so trimming has padding to remove), or None."""
    padded = tokens["attention_mask"][:, -1] == 0
    return {name: array[padded] for name, array in tokens.items()} if padded.any() else None


def _torch_text(text_graph: nn.Module, tokens: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return text_graph(*(torch.from_numpy(tokens[name]) for name in TEXT_INPUTS)).numpy()


def _runs_like(path: Path, feeds: dict[str, np.ndarray], expected: np.ndarray) -> bool:
    """Whether the ONNX graph at ``path`` runs ``feeds`` and gives ``expected`` (fp32 tolerance)."""
    quiet = ort.SessionOptions()
    quiet.log_severity_level = 4  # a failure is expected and handled: no error log line
    try:
        got = ort.InferenceSession(str(path), quiet, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    except Exception:  # e.g. a Reshape to the traced length: the sequence axis is not really dynamic
        return False
    return bool(np.abs(expected - got).max() <= FP32_TOLERANCE)


def _export_text(text_graph: nn.Module, tokenizer: Tokenizer, check_texts: list[str], path: Path) -> bool:
    """Export the text graph, with a dynamic sequence axis where that gives the same embeddings; returns
    whether it did.

    Dynamic needs two things: the encoder ignores trailing padding (torch on padded and on trimmed texts
    agree: masked attention, pooling at a real token, as CLIP- and BERT-style encoders do; one that pools
    the last position, as SigLIP's, does not), and the exported graph really takes shorter inputs (ONNX
    Runtime on trimmed texts agrees with torch; a graph whose traced shapes are constants does not).
    Otherwise the graph takes the fixed context length."""
    dummy = token_batch(tokenizer, ["a photo", "of something longer than that"])
    args = (torch.from_numpy(dummy["input_ids"]), torch.from_numpy(dummy["attention_mask"]))
    probe = _padded_rows(token_batch(tokenizer, [*check_texts, "a", "a photo of a thing."]))
    if probe is not None:
        expected, trimmed = _torch_text(text_graph, probe), trim_padding(probe)
        if np.abs(expected - _torch_text(text_graph, trimmed)).max() <= 1e-5:
            _export(text_graph, args, path, TEXT_INPUTS, TEXT_INPUTS)
            if _runs_like(path, trimmed, expected):
                return True
    _export(text_graph, args, path, TEXT_INPUTS)
    return False


@dataclass(frozen=True)
class ExportCheck:
    """What :func:`verify_export` measured (manifest metrics) and where it ran (manifest provenance)."""

    metrics: dict[str, float]
    provenance: dict[str, str] = field(default_factory=dict)


def fp16_provider(available: Sequence[str] | None = None) -> str:
    """The first of :data:`FP16_PROVIDERS` this ONNX Runtime has: where a float16 bundle is gated."""
    have = ort.get_available_providers() if available is None else available
    return next(p for p in FP16_PROVIDERS if p in have or p == CPU)


def _session(path: Path, provider: str = CPU, fp16: bool = False) -> ort.InferenceSession:
    """A session on ``provider`` (TensorRT with CUDA after it, as Triton runs it); ExportError when the
    provider did not load, where ONNX Runtime would carry on on the CPU and check somewhere else."""
    providers = [provider]
    if provider == "TensorrtExecutionProvider" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.append("CUDAExecutionProvider")
    # ONNX Runtime 1.32's CPU layout optimiser (NCHWc, level ORT_ENABLE_ALL) segfaults at session creation
    # on float16 text graphs of two or more transformer layers (the demo model's): it only re-lays-out
    # convolutions for the CPU, so a float16 check on the CPU goes without it.
    disabled = ["NchwcTransformer"] if fp16 and provider == CPU else []
    try:
        session = ort.InferenceSession(str(path), providers=providers, disabled_optimizers=disabled)
    except Exception as exc:  # onnxruntime raises its own exception types for a provider that fails
        raise ExportError(f"no ONNX Runtime session on {provider}: {exc}") from exc
    if provider not in session.get_providers():
        raise ExportError(
            f"{provider} did not load (ONNX Runtime fell back to {', '.join(session.get_providers())}; "
            "its log says why): the check runs where the bundle will, never on a fallback"
        )
    session.disable_fallback()  # a provider failure while running is an error too, not a CPU rerun
    return session


def _compare(what: str, expected: np.ndarray, got: np.ndarray, tolerance: float) -> float:
    diff = float(np.abs(expected - got).max())
    if not diff <= tolerance:
        raise ExportError(
            f"{what}: ONNX Runtime differs from torch by {diff:.2e} (tolerance {tolerance:.0e})"
        )
    return diff


def _min_cosine(what: str, expected: np.ndarray, got: np.ndarray, rows: Sequence[str], where: str) -> float:
    """The worst row's cosine similarity; ExportError naming that row when it is below FP16_MIN_COSINE."""
    a, b = expected.astype(np.float64), got.astype(np.float64)
    norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    cosine = (a * b).sum(axis=1) / norms
    worst = int(np.argmin(cosine))
    if not cosine[worst] >= FP16_MIN_COSINE:
        raise ExportError(
            f"{what}: float16 on {where} has cosine similarity {cosine[worst]:.6f} to torch float32 at "
            f"{rows[worst]} (the worst row; the gate is >= {FP16_MIN_COSINE})"
        )
    return float(cosine[worst])


def _check_top1(
    torch_img: np.ndarray, torch_txt: np.ndarray, onnx_img: np.ndarray, onnx_txt: np.ndarray, texts: list[str]
) -> None:
    """Top-1 over the check texts must be the same for every check image, with no near-tie allowance.

    Unit vectors with cosine c to torch's differ from them by sqrt(2 (1 - c)), so a score moves by at most
    sqrt(2 (1 - c_image)) + sqrt(2 (1 - c_text)): 0.089 at the 0.999 gate, 0.0028 at cosines of 0.999999
    (about what the tiny and demo models reach on the CPU). An allowance sized to excuse flips within that
    bound would excuse every flip the cosines permit and leave this check nothing to catch."""
    torch_scores, onnx_scores = torch_img @ torch_txt.T, onnx_img @ onnx_txt.T
    expected, got = torch_scores.argmax(1), onnx_scores.argmax(1)
    wrong = np.flatnonzero(expected != got)
    if len(wrong):
        i = int(wrong[0])
        ranked = np.sort(torch_scores[i])
        raise ExportError(
            f"top-1 over the check texts differs between torch and ONNX on {len(wrong)} of {len(expected)} "
            f"images (first: image {i}, torch {texts[expected[i]]!r}, ONNX {texts[got[i]]!r}; torch's "
            f"top-2 margin there {ranked[-1] - ranked[-2]:.2e})"
        )


def verify_export(
    request: ExportRequest, image_onnx: Path, text_onnx: Path, fp16: bool = False, provider: str | None = None
) -> ExportCheck:
    """Compare ONNX Runtime with torch float32 on the request's real inputs; raise ExportError on a mismatch.

    Float32 graphs run on the CPU and must agree within FP32_TOLERANCE. Float16 graphs run on ``provider``
    (default :func:`fp16_provider`: CUDA when ONNX Runtime has it, which computes in float16 where the CPU
    provider mostly does not) and every image's and text's embedding must reach FP16_MIN_COSINE. Either way
    top-1 over the check texts must agree on every image, and uint8 inputs must feed only Cast nodes.
    """
    for path in (image_onnx, text_onnx):
        check_cast_first(path)
    image_graph = ImageGraph(request.image_encoder, request.preprocess).eval()
    text_graph = TextGraph(request.text_encoder).eval()
    pixels = image_batch(request.check_images, request.preprocess)
    chunks = np.array_split(pixels, max(1, len(pixels) // 64))
    tokens = token_batch(request.tokenizer, request.check_texts)
    with torch.no_grad():
        torch_img = torch.cat([image_graph(torch.from_numpy(c)) for c in chunks]).numpy()
    torch_txt = _torch_text(text_graph, tokens)
    where = (provider or fp16_provider()) if fp16 else CPU
    image_session, text_session = _session(image_onnx, where, fp16), _session(text_onnx, where, fp16)
    onnx_img = np.concatenate([image_session.run(None, {"pixels": c})[0] for c in chunks])
    onnx_txt = text_session.run(None, tokens)[0]
    texts = {"text embeddings": onnx_txt}
    if isinstance(text_session.get_inputs()[0].shape[1], str):  # dynamic sequence axis
        texts["text embeddings, padding trimmed"] = text_session.run(None, trim_padding(tokens))[0]
    metrics = {
        "export_max_abs_diff_image": float(np.abs(torch_img - onnx_img).max()),
        "export_max_abs_diff_text": max(float(np.abs(torch_txt - t).max()) for t in texts.values()),
    }
    provenance = {}
    if fp16:
        images = [f"check image {i}" for i in range(len(torch_img))]
        rows = [f"check text {i} {t!r}" for i, t in enumerate(request.check_texts)]
        metrics["export_fp16_min_cosine_image"] = _min_cosine(
            "image embeddings", torch_img, onnx_img, images, where
        )
        metrics["export_fp16_min_cosine_text"] = min(
            _min_cosine(what, torch_txt, got, rows, where) for what, got in texts.items()
        )
        provenance["fp16_checked_on"] = where
    else:
        _compare("image embeddings", torch_img, onnx_img, FP32_TOLERANCE)
        for what, got in texts.items():
            _compare(what, torch_txt, got, FP32_TOLERANCE)
    for got in texts.values():
        _check_top1(torch_img, torch_txt, onnx_img, got, request.check_texts)
    return ExportCheck(metrics, provenance)


def git_commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return done.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def export_bundle(
    request: ExportRequest,
    repository: Path,
    fp16: bool = False,
    triton: TritonOptions | None = None,
    activate: bool | None = None,
) -> Manifest:
    """Export, verify and publish ``request`` as the next version of bundle ``request.name``.

    ``activate`` (default: only when no version is active yet) promotes the new version at once.
    ``triton`` regenerates the Triton configs from these settings; None keeps existing configs' settings.
    """
    repository = Path(repository)
    name = request.name
    image_root, text_root = encoder_root(repository, name, "image"), encoder_root(repository, name, "text")
    for root in (image_root, text_root):  # versions staged by exports that were killed
        atomic.remove_stale(root, prefix=STAGING_PREFIX)
    with (
        atomic.staging_dir(image_root, name, prefix=STAGING_PREFIX) as staged_image,
        atomic.staging_dir(text_root, name, prefix=STAGING_PREFIX) as staged_text,
    ):
        image_graph = ImageGraph(request.image_encoder, request.preprocess).eval()
        text_graph = TextGraph(request.text_encoder).eval()
        size = request.preprocess.size
        steps = tqdm(total=4, desc=f"exporting {name}", unit="step")
        _export(
            image_graph,
            (torch.zeros(2, size, size, 3, dtype=torch.uint8),),
            staged_image / MODEL_FILE,
            ["pixels"],
        )
        steps.update()
        dynamic = _export_text(text_graph, request.tokenizer, request.check_texts, staged_text / MODEL_FILE)
        steps.update()
        if fp16:
            onnx_graphs.to_fp16(staged_image / MODEL_FILE)
            onnx_graphs.to_fp16(staged_text / MODEL_FILE)
        check = verify_export(request, staged_image / MODEL_FILE, staged_text / MODEL_FILE, fp16)
        steps.update()
        variants = VariantOutcome([], {}, [])
        if request.variants is not None:
            if fp16:
                raise ExportError("lower-precision variants are made from an fp32 bundle: drop --fp16")
            variants = build_variants(
                request.variants, staged_image, staged_text, request.preprocess, request.tokenizer
            )
            for line in variants.log:
                tqdm.write(line)
        request.tokenizer.save(str(staged_text / TOKENIZER_FILE))
        manifest = _publish(request, repository, staged_image, staged_text, check, fp16, dynamic, variants)
        steps.update()
        steps.close()
    if activate or (activate is None and active_version(repository, name) is None):
        promote(repository, name, manifest.version, triton)
    else:  # keep serving the active version, but make sure configs exist
        write_missing_configs(repository, manifest, triton)
    return manifest


def _publish(
    request: ExportRequest,
    repository: Path,
    staged_image: Path,
    staged_text: Path,
    check: ExportCheck,
    fp16: bool,
    dynamic_length: bool,
    variants: VariantOutcome,
) -> Manifest:
    """Write the manifest and move the staged folders into place as a new version (retrying on a race)."""
    size, length = request.preprocess.size, request.context_length
    embed_dim = int(_session(staged_image / MODEL_FILE, fp16=fp16).get_outputs()[0].shape[-1])

    def manifest_for(version: int) -> Manifest:
        image_file = relative_file(request.name, "image", version, MODEL_FILE)
        text_file = relative_file(request.name, "text", version, MODEL_FILE)
        return Manifest(
            name=request.name,
            version=version,
            embed_dim=embed_dim,
            loss=request.loss,
            logit_scale=request.logit_scale,
            logit_bias=request.logit_bias,
            preprocess=request.preprocess,
            image_encoder=EncoderSpec(
                triton_name=triton_model(request.name, "image"),
                file=image_file,
                inputs=(TensorSpec(name="pixels", dtype="uint8", shape=(-1, size, size, 3)),),
                outputs=(TensorSpec(name="embedding", dtype="float32", shape=(-1, embed_dim)),),
            ),
            text_encoder=EncoderSpec(
                triton_name=triton_model(request.name, "text"),
                file=text_file,
                inputs=tuple(
                    TensorSpec(name=name, dtype="int64", shape=(-1, -1 if dynamic_length else length))
                    for name in TEXT_INPUTS
                ),
                outputs=(TensorSpec(name="embedding", dtype="float32", shape=(-1, embed_dim)),),
            ),
            text=TextSpec(
                tokenizer=relative_file(request.name, "text", version, TOKENIZER_FILE), context_length=length
            ),
            templates=request.templates,
            metrics={**request.metrics, **check.metrics},
            evaluation=request.evaluation,
            provenance={
                "git_commit": git_commit(),
                "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "precision": "fp16" if fp16 else "fp32",
                **check.provenance,
                **request.provenance,
                **variants.rejected,
            },
            variants=tuple(v.entry(request.name, version) for v in variants.built),
        )

    return publish_version(repository, request.name, manifest_for, staged_image, staged_text)
