"""Import pretrained Hugging Face CLIP and SigLIP models as serving bundles.

The bundle contract (uint8 pixels in, L2-normalised embeddings out, a fixed-length ``tokenizer.json``)
is what the gateway serves, so an imported model must reproduce transformers' own scores through it:
the processor config becomes a :class:`PreprocessSpec`, the tokenizer (the folder's ``tokenizer.json``,
else for SigLIP one built from its SentencePiece file) is fixed to the text model's context length with
the pad token transformers uses, and the learned scale (and SigLIP bias) go into the manifest. The
tokenizer is checked against transformers' on the check texts before export.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer
from torch import nn

from lit_bundle import PreprocessSpec
from lit_bundle.manifest import Manifest
from lit_bundle.triton import TritonOptions
from training.export import ExportRequest, export_bundle
from training.tokenizer_files import is_bpe, lowercase_first, read_spm, spm_tokenizer
from training.towers.base import fixed_length

SUPPORTED = {"clip": ("CLIPModel", "softmax"), "siglip": ("SiglipModel", "sigmoid")}
# PIL's resampling enum values, as stored in ``preprocessor_config.json``.
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}
_DEFAULT_PAD = {"clip": "<|endoftext|>", "siglip": "</s>"}
# Gemma's vocabulary has 256,000 pieces (262,144 from Gemma 3); SigLIP 2 uses Gemma's.
GEMMA_VOCAB = 256_000
CHECK_TEXTS = (
    "a photo of a red circle.",
    "a blurry photo of a dog",
    "A Photo Of Two Cats, Sleeping!",
    "a very long caption that keeps going " * 12,  # longer than any context: exercises truncation
)


def _features(output: Any) -> torch.Tensor:
    """``get_*_features`` returns a tensor in transformers 4.x, an output with ``pooler_output`` in 5.x."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class HFImageFeatures(nn.Module):
    """Normalised pixels ``(B, 3, S, S)`` -> projected image features, as ``logits_per_image`` uses them."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=pixel_values))


class HFTextFeatures(nn.Module):
    """Token ids and mask -> projected text features.

    SigLIP was trained on max-length padded ids without a mask (it pools the last position, which is
    usually padding), so ``use_mask=False`` ignores the mask; the bundle's inputs stay the same.
    """

    def __init__(self, model: nn.Module, use_mask: bool) -> None:
        super().__init__()
        self.model = model
        self.use_mask = use_mask

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask if self.use_mask else None
        out = _features(self.model.get_text_features(input_ids=input_ids, attention_mask=mask))
        if not self.use_mask:  # keep the mask an input of the traced graph, at no numerical cost
            out = out + (attention_mask[:, :1] * 0).to(out.dtype)
        return out


# -- preprocessing ------------------------------------------------------------------------------


def _size(value: Any, key: str) -> int | None:
    """Read ``key`` from a size dict (transformers 4.x) or ``SizeDict`` (5.x)."""
    if value is None:
        return None
    if isinstance(value, dict):
        return value.get(key)
    return getattr(value, key, None)


def _crop_fraction(crop: int, shortest: int) -> float:
    """The ``crop_fraction`` for which ``floor(crop / fraction) == shortest`` holds in float arithmetic."""
    fraction = crop / shortest
    while math.floor(crop / fraction) < shortest:
        fraction = math.nextafter(fraction, 0.0)
    return fraction


def _triple(value: Any, default: float) -> tuple[float, float, float]:
    if value is None:
        value = default
    if isinstance(value, int | float):
        value = [value] * 3
    if len(value) != 3:
        raise ValueError(f"expected 3 per-channel values, got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


def preprocess_spec(processor: Any) -> PreprocessSpec:
    """Map a CLIP/SigLIP image processor's settings to the bundle's :class:`PreprocessSpec`.

    Raises ``ValueError`` for settings the bundle cannot express (no resize, non-square output,
    a rescale other than 1/255, resampling filters other than nearest/bilinear/bicubic/lanczos).
    """
    name = type(processor).__name__
    if not getattr(processor, "do_resize", True):
        raise ValueError(f"{name} has do_resize=False: the bundle needs a fixed input size")
    if not getattr(processor, "do_rescale", True) or not math.isclose(
        float(getattr(processor, "rescale_factor", 1 / 255)), 1 / 255, rel_tol=1e-6
    ):
        raise ValueError(f"{name} must rescale pixels by 1/255 (it has do_rescale/rescale_factor otherwise)")
    resample = int(getattr(processor, "resample", 3))
    if resample not in _RESAMPLE:
        raise ValueError(f"{name} resamples with PIL filter {resample}; supported: {sorted(_RESAMPLE)}")
    if getattr(processor, "do_normalize", True):
        mean, std = _triple(processor.image_mean, 0.0), _triple(processor.image_std, 1.0)
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)

    size, crop = processor.size, getattr(processor, "crop_size", None)
    do_crop = bool(getattr(processor, "do_center_crop", False))
    shortest, height, width = _size(size, "shortest_edge"), _size(size, "height"), _size(size, "width")
    crop_h, crop_w = _size(crop, "height"), _size(crop, "width")
    common = {"interpolation": _RESAMPLE[resample], "mean": mean, "std": std}
    if shortest and not _size(size, "longest_edge"):
        if not do_crop or not crop_h or crop_h != crop_w or crop_h > shortest:
            raise ValueError(
                f"{name} resizes the shortest edge to {shortest} but does not centre-crop a square of at "
                f"most that size (do_center_crop={do_crop}, crop_size={crop}): unsupported"
            )
        return PreprocessSpec(
            size=crop_h, resize="shortest", crop_fraction=_crop_fraction(crop_h, shortest), **common
        )
    if height and height == width:
        if do_crop and (crop_h, crop_w) != (height, width):
            raise ValueError(f"{name} squashes to {height}x{width} and then crops to {crop}: unsupported")
        return PreprocessSpec(size=height, resize="squash", **common)
    raise ValueError(f"{name} has size {size}: only a square height/width or a shortest_edge is supported")


# -- tokenizer ----------------------------------------------------------------------------------


def _hf_tokenizer(source: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source)


def _no_fast_tokenizer(source: str, model_type: str, reason: str) -> ValueError:
    hint = (
        " transformers has no fast SigLIP tokenizer (its lower-casing and punctuation stripping happen in"
        " Python), and the folder has no SentencePiece spiece.model (SigLIP) or BPE tokenizer.model"
        " (SigLIP 2) to build one from."
        if model_type == "siglip"
        else ""
    )
    return ValueError(
        f"cannot build a `tokenizers` tokenizer for {source}: {reason}.{hint} The bundle needs a "
        f"tokenizer.json: put one that reproduces the model's tokenizer into the model folder."
    )


def _folder_tokenizer(folder: Path, model_type: str, context_length: int) -> Tokenizer | None:
    """The folder's ``tokenizer.json``, else for SigLIP one built from its SentencePiece file, else ``None``.

    Google's SigLIP checkpoints ship only ``spiece.model`` (transformers' ``SiglipTokenizer`` is Python
    only); SigLIP 2's may ship only Gemma's ``tokenizer.model``.
    """
    if (folder / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(folder / "tokenizer.json"))
    if model_type != "siglip":
        return None
    if (folder / "spiece.model").is_file():
        return spm_tokenizer(folder / "spiece.model", "siglip", context_length)
    if _gemma_model(folder):
        return spm_tokenizer(folder / "tokenizer.model", "gemma", context_length)
    return None


def _gemma_model(folder: Path) -> bool:
    """Whether the folder has a BPE SentencePiece ``tokenizer.model``: Gemma's, as SigLIP 2 uses."""
    model = folder / "tokenizer.model"
    return model.is_file() and is_bpe(read_spm(model))


def _is_gemma(folder: Path, tokenizer: Tokenizer) -> bool:
    """SigLIP 2's Gemma tokenizer: a BPE ``tokenizer.model``, or ``<bos>``/``<eos>`` in a 256k vocabulary."""
    if _gemma_model(folder):
        return True
    named = all(tokenizer.token_to_id(t) is not None for t in ("<bos>", "<eos>"))
    return named and tokenizer.get_vocab_size() >= GEMMA_VOCAB


def _lowercases(tokenizer: Tokenizer) -> bool:
    return '"Lowercase"' in json.dumps(json.loads(tokenizer.to_str()).get("normalizer"))


class LowercasedInputs:
    """transformers' Gemma tokenizer with SigLIP 2's lower-casing applied to its inputs first.

    The hub's SigLIP 2 tokenizers are Gemma's, which keep case, but SigLIP 2 was trained on lower-cased
    text, so the bundle lower-cases; :func:`check_tokenizer` compares it with this. Character by
    character, as the ``Lowercase`` normaliser: Python's ``lower()`` gives a word-final "Σ" as "ς".
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, texts: list[str], **kwargs: Any) -> Any:
        return self.tokenizer([text.replace("Σ", "σ").lower() for text in texts], **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tokenizer, name)


def bundle_tokenizer(source: str, model_type: str, context_length: int) -> tuple[Tokenizer, Any]:
    """The bundle's fixed-length tokenizer: the folder's (:func:`_folder_tokenizer`), else the fast one
    behind ``AutoTokenizer``.

    Returns it with transformers' own tokenizer (``None`` when that cannot load but the folder has a
    tokenizer file), whose pad token it uses: CLIP pads with ``<|endoftext|>`` in OpenAI's checkpoints
    but with ``!`` in others, and config ``pad_token_id``s are unreliable. A SigLIP with Gemma's tokenizer
    (SigLIP 2 at a fixed resolution is a ``SiglipModel``) gets a lower-casing normaliser first, as
    transformers' ``Siglip2Tokenizer`` has, and the returned reference lower-cases its inputs too.
    """
    folder = Path(source)
    try:
        reference, failure = _hf_tokenizer(source), None
    except Exception as exc:  # missing sentencepiece, vocabulary files, ...: re-raised with the fix
        reference, failure = None, exc
    tokenizer = _folder_tokenizer(folder, model_type, context_length)
    if tokenizer is None:
        tokenizer = _fast_backend(source, model_type, reference, failure)
    default_pad = _DEFAULT_PAD[model_type]
    if model_type == "siglip" and _is_gemma(folder, tokenizer):
        if not _lowercases(tokenizer):
            lowercase_first(tokenizer)
        reference = None if reference is None else LowercasedInputs(reference)
        default_pad = "<pad>"
    own = (tokenizer.padding or {}).get("pad_token")
    pad_token = getattr(reference, "pad_token", None) or _pad_from_config(source) or own or default_pad
    pad_id = tokenizer.token_to_id(str(pad_token))
    if pad_id is None:
        raise ValueError(f"the pad token {pad_token!r} of {source} is not in its tokenizer.json vocabulary")
    return fixed_length(tokenizer, context_length, pad_id, str(pad_token)), reference


def _fast_backend(source: str, model_type: str, reference: Any, failure: Exception | None) -> Tokenizer:
    """A copy of the ``tokenizers`` tokenizer behind transformers' (``fixed_length`` mutates it)."""
    if reference is None:
        first = (str(failure).strip().splitlines() or [type(failure).__name__])[0]
        raise _no_fast_tokenizer(source, model_type, f"AutoTokenizer failed ({first})") from failure
    backend = getattr(reference, "backend_tokenizer", None)
    if backend is None:
        raise _no_fast_tokenizer(source, model_type, f"{type(reference).__name__} is not a fast tokenizer")
    return Tokenizer.from_str(backend.to_str())


def _pad_from_config(source: str) -> str | None:
    config = Path(source) / "tokenizer_config.json"
    if not config.is_file():
        return None
    pad = json.loads(config.read_text()).get("pad_token")
    return pad.get("content") if isinstance(pad, dict) else pad


def check_tokenizer(tokenizer: Tokenizer, reference: Any, texts: list[str], context_length: int) -> None:
    """Raise if ``tokenizer`` gives other ids than transformers' tokenizer with max-length padding."""
    expected = reference(
        texts, padding="max_length", truncation=True, max_length=context_length, return_attention_mask=False
    )["input_ids"]
    for text, encoding, ids in zip(texts, tokenizer.encode_batch(texts), expected, strict=True):
        if encoding.ids != list(ids):
            inner = reference.tokenizer if isinstance(reference, LowercasedInputs) else reference
            name = type(inner).__name__
            raise ValueError(
                f"the bundle tokenizer disagrees with transformers' {name} on {text!r}:\n"
                f"  bundle:       {encoding.ids}\n  transformers: {list(ids)}"
            )


# -- import -------------------------------------------------------------------------------------


def check_images(size: int, count: int = 4) -> list[Image.Image]:
    """Deterministic synthetic images, one non-square so that resizing and cropping are exercised."""
    from training.data.synthetic import SyntheticWorld

    world = SyntheticWorld(image_size=max(16, size))
    images = [world.sample("eval", i)[0] for i in range(count)]
    wide = np.random.default_rng(0).integers(0, 256, (size, size * 3 // 2 + 1, 3), dtype=np.uint8)
    return [*images, Image.fromarray(wide)]


def model_type(source: str) -> str:
    from transformers import AutoConfig

    kind = AutoConfig.from_pretrained(source).model_type
    if kind not in SUPPORTED:
        raise ValueError(
            f"{source} is a {kind!r} model; import_hf supports model types {sorted(SUPPORTED)} "
            "(Hugging Face CLIPModel and SiglipModel)"
        )
    return kind


def import_hf(
    source: str,
    repository: Path,
    name: str,
    fp16: bool = False,
    templates: tuple[str, ...] | None = None,
    triton: TritonOptions | None = None,
    activate: bool | None = None,
) -> Manifest:
    """Export a Hugging Face ``CLIPModel`` or ``SiglipModel`` (hub name or folder) as bundle ``name``."""
    import transformers
    from transformers import AutoImageProcessor

    kind = model_type(source)
    class_name, loss = SUPPORTED[kind]
    model = getattr(transformers, class_name).from_pretrained(source, dtype=torch.float32).eval()
    spec = preprocess_spec(AutoImageProcessor.from_pretrained(source))
    context_length = int(model.config.text_config.max_position_embeddings)
    tokenizer, reference = bundle_tokenizer(source, kind, context_length)
    texts = list(CHECK_TEXTS)
    if reference is not None:
        check_tokenizer(tokenizer, reference, texts, context_length)
    bias = float(model.logit_bias.item()) if kind == "siglip" else None
    request = ExportRequest(
        name=name,
        image_encoder=HFImageFeatures(model),
        text_encoder=HFTextFeatures(model, use_mask=kind == "clip"),
        tokenizer=tokenizer,
        context_length=context_length,
        preprocess=spec,
        loss=loss,
        logit_scale=float(model.logit_scale.exp().item()),
        logit_bias=bias,
        check_images=check_images(spec.size),
        check_texts=texts,
        provenance={"source": source, "importer": f"hf-{kind}", "transformers": transformers.__version__},
        **({"templates": tuple(templates)} if templates else {}),
    )
    return export_bundle(request, repository, fp16=fp16, triton=triton, activate=activate)
