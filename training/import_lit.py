"""Import one of Google's published LiT checkpoints (``.npz`` + vocabulary) as a serving bundle.

The towers come from the parameter tree (training/lit_npz.py, training/lit_npz_text.py), the tokenizer from
the vocabulary file Google ships beside each checkpoint (``LiT-B16B.txt``: BERT WordPiece; ``LiT-L16S.model``:
SentencePiece; training/tokenizer_files.py), and the manifest carries the model's own preprocessing: a
bilinear resize of the whole image to 224 x 224 without a crop, then ``x / 127.5 - 1`` (mean and std 0.5,
not CLIP's), context length 16, softmax scores at the learned temperature ``exp(t)``, CLIP's 80 ImageNet
prompt templates (what the LiT paper's zero-shot evaluation used), and the checkpoint's sha256.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lit_bundle import PreprocessSpec
from lit_bundle.manifest import Manifest, sha256_file
from lit_bundle.triton import TritonOptions
from training.export import ExportRequest, export_bundle
from training.importers import CHECK_TEXTS, check_images
from training.lit_npz import TreeError, read_tree, required, vit_shape, vit_tower
from training.lit_npz_text import context_length, text_kind, text_tower, vocab_size
from training.templates import load_templates
from training.tokenizer_files import lit_tokenizer

DEFAULT_TEMPLATES = "imagenet80"


def lit_preprocess(image_size: int) -> PreprocessSpec:
    """LiT's evaluation preprocessing: squash to ``image_size`` (bilinear), values to [-1, 1]."""
    return PreprocessSpec(
        size=image_size, resize="squash", interpolation="bilinear", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
    )


def import_lit(
    checkpoint: Path,
    vocabulary: Path,
    repository: Path,
    name: str,
    text_heads: int | None = None,
    fp16: bool = False,
    templates: tuple[str, ...] | None = None,
    triton: TritonOptions | None = None,
    activate: bool | None = None,
) -> Manifest:
    """Export ``checkpoint`` with ``vocabulary`` as bundle ``name`` (checked against torch)."""
    tree = read_tree(checkpoint)
    shape = vit_shape(tree)
    image, text = vit_tower(tree), text_tower(tree, text_heads)
    image_width = shape.head or shape.width
    text_width = int(required(tree, "txt/head/kernel").shape[1])
    if image_width != text_width:
        raise TreeError(f"the image tower gives {image_width} features and the text tower {text_width}")
    logit_scale = float(np.exp(required(tree, "t").reshape(-1)[0]))
    tree.check_all_placed()
    context = context_length(tree)
    tokenizer = lit_tokenizer(vocabulary, context)
    if tokenizer.get_vocab_size() > vocab_size(tree):
        raise ValueError(
            f"{vocabulary.name} has {tokenizer.get_vocab_size():,} tokens but the text tower embeds "
            f"{vocab_size(tree):,}: give the vocabulary published with this checkpoint"
        )
    spec = lit_preprocess(shape.image_size)
    request = ExportRequest(
        name=name,
        image_encoder=image,
        text_encoder=text,
        tokenizer=tokenizer,
        context_length=context,
        preprocess=spec,
        loss="softmax",
        logit_scale=logit_scale,
        logit_bias=None,
        check_images=check_images(spec.size),
        check_texts=list(CHECK_TEXTS),
        templates=templates or tuple(load_templates(DEFAULT_TEMPLATES)),
        provenance={
            "source": checkpoint.name,
            "importer": f"lit-npz-{text_kind(tree)}",
            "checkpoint_sha256": sha256_file(checkpoint),
            "vocabulary": vocabulary.name,
            "vocabulary_sha256": sha256_file(vocabulary),
        },
    )
    return export_bundle(request, repository, fp16=fp16, triton=triton, activate=activate)
