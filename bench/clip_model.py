"""A randomly initialised CLIP with ViT-B/32 sizes, built offline, and its imported serving bundle.

Benchmarks need an encoder of realistic cost but nothing may come from a model hub, so
:func:`build_clip` saves a ``transformers.CLIPModel`` with ``CLIPConfig``'s default (ViT-B/32) sizes and
random, seeded weights, with a ``CLIPProcessor``: CLIP's image-processor defaults and CLIP's own
byte-level BPE tokenizer over a small vocabulary. That vocabulary holds every byte plus one merged token
for each word in :data:`WORDS` (all prompt and label words of the benchmarks), so a benchmark prompt
such as ``"a photo of a red sports car."`` tokenizes to one token per word and punctuation mark, as the
real CLIP tokenizer does for common words. The text encoder's cost grows with the sequence length, so
this keeps text-side timings comparable to the real model. The model's vocabulary keeps CLIP's 49,408
rows, so the parameter count (about 151 M) matches too.

:func:`clip_bundle` imports that folder with :func:`training.importers.import_hf` (what
``lit-train import-hf`` runs) into a Triton model repository. Both are cached and reused when a
marker file says the build matches and the bundle's files still verify.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

BUILDER_VERSION = 1
MARKER = "bench-build.json"
CACHE = Path(__file__).resolve().parent / ".cache"

# The hypothesis template both sides of a comparison use (the gateway's ``templates``, the pipeline's
# ``hypothesis_template``).
TEMPLATE = "a photo of a {}."
TEMPLATES = (TEMPLATE,)

_NOUNS = """
dog cat horse cow sheep goat pig rabbit mouse bird duck goose chicken owl eagle parrot penguin swan
fish shark whale dolphin turtle frog snake lizard crocodile bee butterfly spider ant beetle snail
lion tiger bear wolf fox deer elephant giraffe zebra monkey gorilla kangaroo koala panda camel
car truck bus bicycle motorcycle train tram boat ship canoe airplane helicopter rocket tractor van
taxi scooter skateboard wagon house tower bridge castle church barn tent cabin lighthouse windmill
fountain statue road street beach mountain river lake forest desert island waterfall garden field
park farm city village harbor market kitchen bedroom office library classroom stadium airport
apple banana orange lemon grape strawberry cherry pear peach melon pineapple tomato potato carrot
onion pepper mushroom bread cake pizza burger sandwich salad soup pasta rice cheese egg cookie
chair table sofa bed lamp clock mirror window door desk shelf bottle cup mug glass plate bowl
spoon fork knife kettle teapot vase basket bucket umbrella hat shoe boot shirt dress jacket scarf
glove bag backpack wallet watch ring necklace guitar piano violin drum trumpet flute camera phone
laptop computer keyboard television radio book newspaper map pencil pen scissors hammer ladder
candle flower rose tulip sunflower tree cactus leaf grass rock stone shell feather ball kite
balloon toy doll robot sign flag fence wall roof tile brick sand snow ice cloud rainbow sunset
""".split()  # noqa: SIM905 - word lists read better as text

_MODIFIERS = """
red blue green yellow orange purple pink brown black white gray golden silver
small large tiny huge old new young wooden metal plastic glass stone paper leather wool
round square striped spotted wet dry broken shiny dirty clean empty full hot cold
sports vintage modern wild baby toy paper frozen fresh ripe sliced
""".split()  # noqa: SIM905 - word lists read better as text

# Words of the templates and of the importer's check texts (training.importers.CHECK_TEXTS).
_OTHER = """
a an the of photo picture image this is that it in on with and two cats sleeping very long caption
keeps going blurry circle close up bright dark cropped good bad
""".split()  # noqa: SIM905 - word lists read better as text

WORDS: tuple[str, ...] = tuple(dict.fromkeys([*_NOUNS, *_MODIFIERS, *_OTHER]))


def benchmark_labels(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct labels of 1-3 words (``"kite"``, ``"red car"``, ``"small wooden boat"``),
    drawn deterministically from :data:`WORDS`, which the bench tokenizer merges into one token each.
    Prompts are made with :data:`TEMPLATE`."""
    nouns, modifiers = list(dict.fromkeys(_NOUNS)), list(dict.fromkeys(_MODIFIERS))
    most = len(nouns) * (1 + len(modifiers) + len(modifiers) * (len(modifiers) - 1))
    if count > most:
        raise ValueError(f"at most {most} distinct labels can be drawn, not {count}")
    rng = random.Random(seed)
    labels: dict[str, None] = {}
    while len(labels) < count:
        words = rng.choices([1, 2, 3], weights=[2, 5, 3])[0]
        label = " ".join([*rng.sample(modifiers, words - 1), rng.choice(nouns)])
        labels.setdefault(label, None)
    return list(labels)


# -- tokenizer ----------------------------------------------------------------------------------


def _apply_merges(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one word: repeatedly merge the lowest-ranked adjacent pair."""
    while len(pieces) > 1:
        pairs = [(ranks.get((a, b), len(ranks)), i) for i, (a, b) in enumerate(itertools.pairwise(pieces))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        pieces = [*pieces[:i], pieces[i] + pieces[i + 1], *pieces[i + 2 :]]
    return pieces


def clip_tokenizer(words: tuple[str, ...] = WORDS) -> Any:
    """CLIP's byte-level BPE pipeline (``transformers.CLIPTokenizer``) over all bytes plus ``words``.

    Merges are added word after word on top of how the merges so far already split that word, so each
    word ends as one token and words added later never change how earlier ones split.
    """
    import transformers
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab |= {c + "</w>": len(alphabet) + i for i, c in enumerate(alphabet)}
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        pieces = _apply_merges([*word[:-1], word[-1] + "</w>"], ranks)
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
            vocab.setdefault(pieces[0], len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    tokenizer = transformers.CLIPTokenizer(vocab=vocab, merges=merges)
    long = [w for w in words if len(tokenizer(w, add_special_tokens=False)["input_ids"]) != 1]
    if long:
        raise AssertionError(f"bench tokenizer splits {long[:5]} into several tokens")
    return tokenizer


# -- model folder -------------------------------------------------------------------------------


def _spec(tiny: bool, seed: int) -> dict[str, Any]:
    words = hashlib.sha256("\n".join(WORDS).encode()).hexdigest()[:16]
    return {"builder": BUILDER_VERSION, "tiny": tiny, "seed": seed, "words": words}


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def build_clip(folder: Path, tiny: bool = False, seed: int = 0) -> Path:
    """Save a seeded random ``CLIPModel`` and its ``CLIPProcessor`` into ``folder`` (reused if built).

    ViT-B/32 sizes (``CLIPConfig`` defaults: vision 768 wide, 12 layers, patch 32, 224 px; text 512 wide,
    12 layers, 77 tokens, 49,408-row vocabulary; projection 512), or with ``tiny`` 2 layers, 32 wide,
    32 px images and a 16-token context, for CI.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local: never ask a hub
    import torch
    import transformers

    folder = Path(folder)
    spec = _spec(tiny, seed)
    if _read_marker(folder / MARKER) == spec and (folder / "config.json").is_file():
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    tokenizer = clip_tokenizer()
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if tiny:
        small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
        text = {**small, "vocab_size": len(tokenizer), "max_position_embeddings": 16, **ids}
        vision = {**small, "image_size": 32, "patch_size": 8}
        config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
        processor_sizes: dict[str, Any] = {
            "size": {"shortest_edge": 32},
            "crop_size": {"height": 32, "width": 32},
        }
    else:
        config = transformers.CLIPConfig(text_config=ids)  # every size a default: ViT-B/32
        processor_sizes = {}
    torch.manual_seed(seed)
    model = transformers.CLIPModel(config).eval()
    model.save_pretrained(folder)
    processor = transformers.CLIPProcessor(
        image_processor=transformers.CLIPImageProcessor(**processor_sizes), tokenizer=tokenizer
    )
    processor.save_pretrained(folder)
    (folder / MARKER).write_text(json.dumps(spec))  # written last: the build is complete
    return folder


# -- bundle -------------------------------------------------------------------------------------


def bundle_name(tiny: bool = False) -> str:
    return "clip_tiny" if tiny else "clip_b32"


def _bundle_marker(repository: Path) -> Path:
    """Beside the repository, not in it: Triton serves every folder of a model repository."""
    return repository.parent / f"{repository.name}.json"


def _bundle_ok(repository: Path, name: str, wanted: dict[str, Any]) -> bool:
    from lit_bundle.repository import load_bundle

    if _read_marker(_bundle_marker(repository)) != wanted:
        return False
    try:
        load_bundle(repository, name)  # the active version, every file checked against its sha256
    except Exception:  # any damage means: build again
        return False
    return True


def clip_bundle(work: Path = CACHE, tiny: bool = False, fp16: bool = False) -> tuple[Path, Path]:
    """``(hf_folder, repository)``: the bench CLIP under ``work`` and a Triton model repository holding
    it imported (by ``import_hf``, as ``lit-train import-hf`` does) as the only, active bundle
    ``clip_b32`` (``clip_tiny`` with ``tiny``; float16 ONNX with ``fp16``). Reused when present and
    its files verify."""
    from training.importers import import_hf

    name = bundle_name(tiny)
    root = Path(work) / name
    hf = build_clip(root / "hf", tiny=tiny)
    repository = root / ("repository-fp16" if fp16 else "repository")
    # "text_axis": bundles exported before the text encoder's sequence axis became dynamic are rebuilt.
    wanted = {**_spec(tiny, 0), "fp16": fp16, "name": name, "text_axis": "dynamic"}
    if _bundle_ok(repository, name, wanted):
        return hf, repository
    _bundle_marker(repository).unlink(missing_ok=True)
    if repository.exists():
        shutil.rmtree(repository)
    repository.mkdir(parents=True)
    began = time.perf_counter()
    import_hf(str(hf), repository, name, fp16=fp16, templates=TEMPLATES, activate=True)
    took = time.perf_counter() - began
    print(f"imported {name}{' (fp16)' if fp16 else ''} into {repository} in {took:.0f} s")
    _bundle_marker(repository).write_text(json.dumps(wanted))
    return hf, repository
