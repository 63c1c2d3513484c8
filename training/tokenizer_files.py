"""Fixed-length ``tokenizers`` tokenizers built offline from the vocabulary files Google ships.

A bundle holds a ``tokenizer.json``, but SigLIP checkpoints ship a SentencePiece ``spiece.model``, SigLIP 2
the Gemma ``tokenizer.model`` and LiT a ``.model`` or a BERT ``vocab.txt``. These functions rebuild each
model's own tokenisation as a ``tokenizers.Tokenizer``, padded and truncated to the context length the
text tower was trained with. SentencePiece files are read with protobuf alone (the schema ships with
transformers), so building a bundle needs neither ``sentencepiece`` nor the network.

Flavours of :func:`spm_tokenizer`:

* ``"siglip"``: transformers' ``SiglipTokenizer`` (lower-case, strip ASCII punctuation, collapse whitespace,
  then SentencePiece), ``$A </s>``, padded with ``</s>``.
* ``"gemma"``: SigLIP 2's Gemma BPE, lower-cased as SigLIP 2 was trained (transformers' ``Siglip2Tokenizer``
  does the same), no ``<bos>``, ``$A <eos>``, padded with ``<pad>``.
* ``"lit"``: LiT's L16S/L16Ti SentencePiece as is, ``$A </s>`` keeping the final ``</s>`` when truncating,
  padded with ``</s>``; the tower pools the last position, which is therefore always ``</s>``.

Known differences, all on text holding a literal special piece: ``tokenizers``' Unigram matches a control
piece such as ``</s>`` or ``<unk>`` written in the text, which SentencePiece (LiT) spells out; after such a
token ``SiglipTokenizer`` drops the next word's ``▁`` prefix and ours keeps it.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
import string
import sys
from pathlib import Path
from typing import Any, Literal

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from training.towers.base import fixed_length

Flavour = Literal["siglip", "gemma", "lit"]
DEFAULT_CONTEXT: dict[str, int] = {"siglip": 64, "gemma": 64, "lit": 16}
# SentencePiece's ModelProto enums (sentencepiece_model.proto).
_UNIGRAM, _BPE = 1, 2
_UNKNOWN, _CONTROL = 2, 3
# Python's ``str.lower()`` gives a word-final capital sigma as "ς" (Unicode's Final_Sigma context); a
# character-wise lowercase gives "σ".
_FINAL_SIGMA = r"(?<=\p{Cased}\p{Case_Ignorable}*)Σ(?!\p{Case_Ignorable}*\p{Cased})"

# SentencePiece's protobuf schema, generated code that ships with transformers.
_SCHEMA = "transformers.utils.sentencepiece_model_pb2_new"


@functools.cache
def _model_proto_class() -> Any:
    """``sentencepiece.ModelProto`` from the schema transformers ships, in a private descriptor pool.

    Importing ``transformers.utils.sentencepiece_model_pb2_new`` would register ``sentencepiece_model.proto``
    in protobuf's default pool, after which ``sentencepiece``'s own generated module (which transformers'
    ``GemmaTokenizer``/``SiglipTokenizer`` loading imports) fails with "duplicate file name", and the other
    way round. So its serialised descriptor is read from the source and added to a pool of our own.
    ``convert_slow_tokenizer.import_protobuf()`` is no option either: it prefers sentencepiece's module,
    and sentencepiece 0.2.3's needs protobuf 7.
    """
    from google.protobuf import descriptor_pool, message_factory

    spec = importlib.util.find_spec(_SCHEMA)
    if spec is None or spec.origin is None:
        raise ImportError(f"{_SCHEMA} is missing: transformers>=5.24 has it")
    calls = (n for n in ast.walk(ast.parse(Path(spec.origin).read_text())) if isinstance(n, ast.Call))
    serialised = next(
        ast.literal_eval(c.args[0]) for c in calls if getattr(c.func, "attr", "") == "AddSerializedFile"
    )
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(serialised)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("sentencepiece.ModelProto"))


def read_spm(path: str | Path) -> Any:
    """Parse a SentencePiece ``.model`` with protobuf alone (no ``sentencepiece``)."""
    proto = _model_proto_class()()
    proto.ParseFromString(Path(path).read_bytes())
    return proto


def spm_base(proto: Any) -> Tokenizer:
    """The model's pieces and normaliser, encoding like ``SentencePieceProcessor.encode`` (no specials).

    NFKC-based models get an NFC step first: tokenizers' ``Precompiled`` normaliser neither composes
    decomposed Hangul nor keeps the second accent of a decomposed "ế", both of which SentencePiece's
    longest-match normaliser composes; NFKC(NFC(x)) equals NFKC(x), so this changes nothing else.
    """
    from transformers.convert_slow_tokenizer import SpmConverter

    kind = proto.trainer_spec.model_type
    if kind == _UNIGRAM:
        vocab: Any = [(p.piece, p.score) for p in proto.pieces]
    elif kind == _BPE:
        vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    else:
        raise ValueError(f"SentencePiece model type {kind} is neither unigram (1) nor BPE (2)")
    tokenizer: Tokenizer = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab, legacy=True)
    spec = proto.normalizer_spec
    if spec.precompiled_charsmap and "nfkc" in spec.name:
        _prepend_normalizers(tokenizer, [normalizers.NFC()])
    return tokenizer


def is_bpe(proto: Any) -> bool:
    return bool(proto.trainer_spec.model_type == _BPE)


def _prepend_normalizers(tokenizer: Tokenizer, steps: list[Any]) -> None:
    current = tokenizer.normalizer
    tokenizer.normalizer = normalizers.Sequence([*steps, *([current] if current is not None else [])])


def lowercase_first(tokenizer: Tokenizer) -> Tokenizer:
    """Lower-case before the tokenizer's own normaliser (SigLIP 2's training texts were lower-cased)."""
    _prepend_normalizers(tokenizer, [normalizers.Lowercase()])
    return tokenizer


@functools.cache
def _python_space() -> str:
    """A regex class of Python's whitespace (``str.isspace``), which ``re``'s ``\\s`` and ``str.strip`` use.

    Spelled out because Oniguruma's ``\\s`` and Rust's whitespace lack U+001C..U+001F.
    """
    return "[" + "".join(re.escape(chr(c)) for c in range(sys.maxunicode + 1) if chr(c).isspace()) + "]"


def _siglip_canonical(tokenizer: Tokenizer) -> None:
    """``SiglipTokenizer``'s Python canonicalisation, ahead of the SentencePiece normaliser.

    It replaces ``▁`` with a space, lower-cases (with Python's final sigma), deletes ``string.punctuation``,
    collapses runs of Python whitespace to one space and strips the ends, before the SentencePiece
    normaliser sees the text, as ``SiglipTokenizer`` does.
    """
    punctuation = "[" + re.escape(string.punctuation) + "]"
    _prepend_normalizers(
        tokenizer,
        [
            normalizers.Replace("▁", " "),
            normalizers.Replace(Regex(_FINAL_SIGMA), "ς"),
            normalizers.Lowercase(),
            normalizers.Replace(Regex(punctuation), ""),
            normalizers.Replace(Regex(_python_space() + "+"), " "),
            normalizers.Replace(Regex(r"\A | \z"), ""),
        ],
    )


def _piece(proto: Any, index: int, what: str) -> str:
    if index < 0 or index >= len(proto.pieces):
        raise ValueError(f"the SentencePiece model has no {what} piece (id {index})")
    return str(proto.pieces[index].piece)


def _special(tokenizer: Tokenizer, pieces: list[str], strip: bool) -> None:
    """Match these pieces whole in the text, as transformers' tokenizers do with their special tokens.

    ``strip``: also take the whitespace around them, as ``SiglipTokenizer``'s do (Gemma's do not).
    """
    tokenizer.add_special_tokens(
        [AddedToken(p, lstrip=strip, rstrip=strip, normalized=False, special=True) for p in pieces]
    )


def _end_with(tokenizer: Tokenizer, eos: str, eos_id: int) -> None:
    template = processors.TemplateProcessing(single=f"$A {eos}", special_tokens=[(eos, eos_id)])
    tokenizer.post_processor = template


def spm_tokenizer(model_path: str | Path, flavour: Flavour, context_length: int | None = None) -> Tokenizer:
    """A fixed-length tokenizer from a SentencePiece ``.model``; see the module docstring for the flavours.

    ``context_length`` defaults to the flavour's (64 for SigLIP and SigLIP 2, 16 for LiT).
    """
    if flavour not in DEFAULT_CONTEXT:
        raise ValueError(f"unknown flavour {flavour!r}: expected one of {sorted(DEFAULT_CONTEXT)}")
    length = DEFAULT_CONTEXT[flavour] if context_length is None else context_length
    proto = read_spm(model_path)
    tokenizer = spm_base(proto)
    spec = proto.trainer_spec
    eos_id = spec.eos_id
    eos = _piece(proto, eos_id, "end-of-text")
    if flavour == "siglip":
        _siglip_canonical(tokenizer)
        _special(tokenizer, [eos, _piece(proto, spec.unk_id, "unknown")], strip=True)
        pad_id = eos_id
    elif flavour == "gemma":
        lowercase_first(tokenizer)
        _special(tokenizer, [p.piece for p in proto.pieces if p.type in (_UNKNOWN, _CONTROL)], strip=False)
        pad_id = spec.pad_id
    else:
        pad_id = eos_id
    _end_with(tokenizer, eos, eos_id)
    return fixed_length(tokenizer, length, pad_id, _piece(proto, pad_id, "padding"))


def wordpiece_tokenizer(vocab_path: str | Path, context_length: int = 16) -> Tokenizer:
    """LiT's BERT tokenisation: ``[CLS]`` and at most ``context_length - 1`` WordPieces, no ``[SEP]``.

    As TF Text's ``BertTokenizer(lower_case=True)`` in vit_jax/big_vision: lower-case, strip accents,
    split punctuation and CJK characters, then WordPiece; padded with ``[PAD]`` (the mask is ``ids != 0``).
    """
    vocab = WordPiece.read_file(str(vocab_path))
    for token in ("[CLS]", "[PAD]", "[UNK]"):
        if token not in vocab:
            raise ValueError(f"{vocab_path} has no {token} token: not a BERT vocabulary")
    tokenizer = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A", special_tokens=[("[CLS]", vocab["[CLS]"])]
    )
    return fixed_length(tokenizer, context_length, vocab["[PAD]"], "[PAD]")


def lit_tokenizer(path: str | Path, context_length: int = 16) -> Tokenizer:
    """The tokenizer of a LiT checkpoint from its vocabulary file: ``.txt`` (BERT) or ``.model`` (SPM)."""
    suffix = Path(path).suffix
    if suffix == ".txt":
        return wordpiece_tokenizer(path, context_length)
    if suffix == ".model":
        return spm_tokenizer(path, "lit", context_length)
    raise ValueError(
        f"{path}: a LiT vocabulary is a BERT WordPiece .txt or a SentencePiece .model, not {suffix!r}"
    )
