"""Export encoders to ONNX as a verified, versioned bundle in a Triton model repository.

The image graph takes uint8 NHWC pixels (4x fewer bytes than float for Triton clients) and does the
float conversion and mean/std normalisation itself; both graphs end in L2 normalisation. Before a
version is published, ONNX Runtime's outputs are compared with torch's on real inputs; a bundle that
fails is never written.
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
from lit_bundle.manifest import (
    MANIFEST_FILE,
    EncoderSpec,
    EvaluationData,
    Manifest,
    TensorSpec,
    TextSpec,
    sha256_file,
)
from lit_bundle.preprocess import resize_and_crop
from lit_bundle.repository import CONFIG_FILE, active_version, next_version, promote, publish
from lit_bundle.triton import TritonOptions, bundle_configs, write_config

OPSET = 17
STAGING_PREFIX = ".staging-"  # versions being written; hidden from readers and from .dockerignore
FP32_TOLERANCE = 1e-4
TEXT_INPUTS = ["input_ids", "attention_mask"]
FP16_TOLERANCE = 2e-2


class ExportError(RuntimeError):
    """The exported graphs disagree with torch; nothing was written."""


class ImageGraph(nn.Module):
    """uint8 ``(B, S, S, 3)`` pixels -> L2-normalised embeddings, normalisation inside the graph."""

    def __init__(self, encoder: nn.Module, spec: PreprocessSpec) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1) * 255.0)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels.permute(0, 3, 1, 2).float() - self.mean) / self.std
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


def _to_fp16(path: Path) -> None:
    """Convert weights and compute to float16, keeping uint8/int64 inputs and a float32 output."""
    import onnx
    from onnxconverter_common import float16

    model = float16.convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    # The converter retypes the outputs of the graph's own Cast-to-float nodes (uint8 pixels, masks)
    # to float16 but leaves their target type: point those casts at float16 too.
    declared = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    for node in model.graph.node:
        if node.op_type == "Cast" and declared.get(node.output[0]) == onnx.TensorProto.FLOAT16:
            for attribute in node.attribute:
                if attribute.name == "to" and attribute.i == onnx.TensorProto.FLOAT:
                    attribute.i = onnx.TensorProto.FLOAT16
    onnx.save(model, str(path))


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


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _compare(what: str, expected: np.ndarray, got: np.ndarray, tolerance: float) -> float:
    diff = float(np.abs(expected - got).max())
    if not diff <= tolerance:
        raise ExportError(
            f"{what}: ONNX Runtime differs from torch by {diff:.2e} (tolerance {tolerance:.0e})"
        )
    return diff


def verify_export(
    request: ExportRequest, image_onnx: Path, text_onnx: Path, tolerance: float, tie_margin: float = 0.0
) -> dict[str, float]:
    """Compare ONNX Runtime with torch on the request's real inputs; raise ExportError on a mismatch.

    Top-1 over the check texts must agree, except (for ``tie_margin > 0``, used for float16) on images
    whose best and second-best torch scores are closer than ``tie_margin``: rounding may flip such
    near-ties without the export being wrong.
    """
    image_graph = ImageGraph(request.image_encoder, request.preprocess).eval()
    text_graph = TextGraph(request.text_encoder).eval()
    pixels = image_batch(request.check_images, request.preprocess)
    chunks = np.array_split(pixels, max(1, len(pixels) // 64))
    tokens = token_batch(request.tokenizer, request.check_texts)
    with torch.no_grad():
        torch_img = torch.cat([image_graph(torch.from_numpy(c)) for c in chunks])
        torch_txt = text_graph(
            torch.from_numpy(tokens["input_ids"]), torch.from_numpy(tokens["attention_mask"])
        )
    image_session, text_session = _session(image_onnx), _session(text_onnx)
    onnx_img = np.concatenate([image_session.run(None, {"pixels": c})[0] for c in chunks])
    onnx_txt = text_session.run(None, tokens)[0]
    image_diff = _compare("image embeddings", torch_img.numpy(), onnx_img, tolerance)
    text_diff = _compare("text embeddings", torch_txt.numpy(), onnx_txt, tolerance)
    if isinstance(text_session.get_inputs()[0].shape[1], str):  # dynamic sequence axis
        trimmed = text_session.run(None, trim_padding(tokens))[0]
        text_diff = max(
            text_diff, _compare("text embeddings, padding trimmed", torch_txt.numpy(), trimmed, tolerance)
        )
    torch_scores = torch_img.numpy() @ torch_txt.numpy().T
    onnx_top1 = (onnx_img @ onnx_txt.T).argmax(1)
    ranked = np.sort(torch_scores, axis=1)
    margin = ranked[:, -1] - ranked[:, -2] if torch_scores.shape[1] > 1 else np.full(len(ranked), np.inf)
    disagree = int(((torch_scores.argmax(1) != onnx_top1) & (margin >= tie_margin)).sum())
    if disagree:
        raise ExportError(f"top-1 over the check texts differs between torch and ONNX on {disagree} images")
    return {"export_max_abs_diff_image": image_diff, "export_max_abs_diff_text": text_diff}


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
    image_root, text_root = repository / f"{name}_image", repository / f"{name}_text"
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
            staged_image / "model.onnx",
            ["pixels"],
        )
        steps.update()
        dynamic = _export_text(text_graph, request.tokenizer, request.check_texts, staged_text / "model.onnx")
        steps.update()
        if fp16:
            _to_fp16(staged_image / "model.onnx")
            _to_fp16(staged_text / "model.onnx")
        tolerance = FP16_TOLERANCE if fp16 else FP32_TOLERANCE
        # float16 may flip near-ties: allow that within twice the worst-case score rounding error.
        check = verify_export(
            request,
            staged_image / "model.onnx",
            staged_text / "model.onnx",
            tolerance,
            4 * tolerance if fp16 else 0.0,
        )
        steps.update()
        request.tokenizer.save(str(staged_text / "tokenizer.json"))
        manifest = _publish(request, repository, staged_image, staged_text, check, fp16, dynamic)
        steps.update()
        steps.close()
    if activate or (activate is None and active_version(repository, name) is None):
        promote(repository, name, manifest.version, triton)
    else:  # keep serving the active version, but make sure configs exist and are current
        for model, text in bundle_configs(manifest, [manifest.version], triton or TritonOptions()).items():
            config = repository / model / CONFIG_FILE
            if not config.exists():
                write_config(config, text)
    return manifest


def _publish(
    request: ExportRequest,
    repository: Path,
    staged_image: Path,
    staged_text: Path,
    check: dict[str, float],
    fp16: bool,
    dynamic_length: bool,
) -> Manifest:
    """Write the manifest and move the staged folders into place as a new version (retrying on a race)."""
    size, length = request.preprocess.size, request.context_length
    for _ in range(10):
        version = next_version(repository, request.name)
        image_file = f"{request.name}_image/{version}/model.onnx"
        text_file = f"{request.name}_text/{version}/model.onnx"
        embed_dim = int(_session(staged_image / "model.onnx").get_outputs()[0].shape[-1])
        manifest = Manifest(
            name=request.name,
            version=version,
            embed_dim=embed_dim,
            loss=request.loss,
            logit_scale=request.logit_scale,
            logit_bias=request.logit_bias,
            preprocess=request.preprocess,
            image_encoder=EncoderSpec(
                triton_name=f"{request.name}_image",
                file=image_file,
                inputs=(TensorSpec(name="pixels", dtype="uint8", shape=(-1, size, size, 3)),),
                outputs=(TensorSpec(name="embedding", dtype="float32", shape=(-1, embed_dim)),),
            ),
            text_encoder=EncoderSpec(
                triton_name=f"{request.name}_text",
                file=text_file,
                inputs=tuple(
                    TensorSpec(name=name, dtype="int64", shape=(-1, -1 if dynamic_length else length))
                    for name in TEXT_INPUTS
                ),
                outputs=(TensorSpec(name="embedding", dtype="float32", shape=(-1, embed_dim)),),
            ),
            text=TextSpec(tokenizer=f"{request.name}_text/{version}/tokenizer.json", context_length=length),
            templates=request.templates,
            metrics={**request.metrics, **check},
            evaluation=request.evaluation,
            provenance={
                "git_commit": git_commit(),
                "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "precision": "fp16" if fp16 else "fp32",
                **request.provenance,
            },
        )
        staged_paths = {
            image_file: staged_image / "model.onnx",
            text_file: staged_text / "model.onnx",
            manifest.text.tokenizer: staged_text / "tokenizer.json",
        }
        files = {rel: sha256_file(src) for rel, src in staged_paths.items()}
        manifest = manifest.model_copy(update={"files": files})
        atomic.write_atomic(staged_image / MANIFEST_FILE, manifest.model_dump_json(indent=1))
        atomic.fsync_tree(staged_text)  # on disk before the renames that make the version visible
        atomic.fsync_tree(staged_image)
        try:
            published = publish(repository, manifest, staged_image, staged_text)
        except FileExistsError:
            continue  # another exporter took this version number: take the next one
        atomic.fsync_dir(staged_text.parent)  # the renames themselves survive a power cut
        atomic.fsync_dir(staged_image.parent)
        return published
    raise ExportError(f"could not find a free version number for {request.name} in {repository}")
