"""Tokenizers built from SentencePiece and WordPiece files give the reference tokenizers' ids.

Each is compared on the same 1,000 varied strings (``tests/tokenizer_fixtures.py``) with the tokenizer
the model was used with: transformers' slow ``SiglipTokenizer`` (SigLIP), transformers' ``Siglip2Tokenizer``
(SigLIP 2), ``sentencepiece`` with LiT's rule (LiT L16S/L16Ti) and BERT tokenisation (LiT B16B/L16L).
Strings on which the reference legitimately differs are left out by an explicit rule, with the reason.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from tests.tokenizer_fixtures import bert_vocab, train_spm, varied_texts
from training.tokenizer_files import lit_tokenizer, spm_tokenizer, wordpiece_tokenizer

transformers = pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")

TEXTS = varied_texts()
Ids = list[list[int]]


@pytest.fixture(scope="module")
def unigram(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_spm(tmp_path_factory.mktemp("siglip") / "spiece.model", "unigram")


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gemma")
    train_spm(folder / "tokenizer.model", "bpe")
    return folder


@pytest.fixture(scope="module")
def vocab_txt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bert_vocab(tmp_path_factory.mktemp("bert") / "vocab.txt")


def _ids(tokenizer: Tokenizer, texts: list[str]) -> Ids:
    return [e.ids for e in tokenizer.encode_batch(texts)]


def _assert_same(texts: list[str], ours: Ids, theirs: Ids) -> None:
    bad = [(t, o, r) for t, o, r in zip(texts, ours, theirs, strict=True) if o != list(r)]
    detail = "\n".join(f"{t!r}\n  ours:   {o}\n  theirs: {list(r)}" for t, o, r in bad[:5])
    assert not bad, f"{len(bad)} of {len(texts)} strings differ:\n{detail}"


def _unless(leave_out: Callable[[str], bool]) -> list[str]:
    """The corpus less the strings ``leave_out`` picks, asserting that only a handful (some) are."""
    kept = [t for t in TEXTS if not leave_out(t)]
    assert len(TEXTS) - 40 <= len(kept) < len(TEXTS)
    return kept


def _without(literals: tuple[str, ...]) -> list[str]:
    """The corpus less the strings holding one of ``literals``."""
    return _unless(lambda text: any(s in text for s in literals))


def test_corpus_is_varied() -> None:
    import unicodedata

    joined = "".join(TEXTS)
    assert len(set(TEXTS)) == 1000 and "" in TEXTS
    assert sum(len(t) > 500 for t in TEXTS) >= 20  # far past 64 tokens
    assert sum(t != unicodedata.normalize("NFC", t) for t in TEXTS) >= 50  # decomposed accents, jamo
    assert sum(t != t.strip() for t in TEXTS) >= 100 and sum("  " in t for t in TEXTS) >= 100
    for needle in ("\t", "\n", "\u200d", "日本", "مرحبا", "שלום", "Σ", "é", "👍", "42", "!"):
        assert needle in joined, needle


def test_siglip_matches_slow_siglip_tokenizer(unigram: Path) -> None:
    """Literal ``</s>``/``<unk>`` are left out: ``SiglipTokenizer`` splits them off as special tokens and
    drops the ``▁`` prefix of the word after them (its "unk trick"); ours keeps that prefix."""
    texts = _without(("</s>", "<unk>"))
    reference = transformers.SiglipTokenizer(vocab_file=str(unigram))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "This sequence already has </s>"
        theirs = reference(texts, padding="max_length", truncation=True, max_length=64)["input_ids"]
    tokenizer = spm_tokenizer(unigram, "siglip")
    _assert_same(texts, _ids(tokenizer, texts), theirs)
    assert {len(ids) for ids in theirs} == {64}


def test_siglip2_matches_transformers_siglip2_tokenizer(gemma_dir: Path) -> None:
    """transformers' ``Siglip2Tokenizer`` (Gemma's BPE with a ``Lowercase`` normaliser, as ours) is the
    reference, on every string, literal special tokens included."""
    reference = transformers.Siglip2Tokenizer.from_pretrained(
        gemma_dir, add_bos_token=False, add_eos_token=True, padding_side="right"
    )
    theirs = reference(TEXTS, padding="max_length", truncation=True, max_length=64)["input_ids"]
    _assert_same(TEXTS, _ids(spm_tokenizer(gemma_dir / "tokenizer.model", "gemma"), TEXTS), theirs)


def test_siglip2_equals_gemma_tokenizer_on_lowercased_text(gemma_dir: Path) -> None:
    """What ``import-hf`` checks a SigLIP 2 bundle against: the hub's Gemma tokenizer on lower-cased text.

    Lower-cased as the ``Lowercase`` normaliser does, character by character: Python's ``lower()`` alone
    would give a word-final capital sigma as "ς", so "Σ" becomes "σ" first. (big_vision lower-cased ASCII
    only, with ``tf.strings.lower``; transformers' ``Siglip2Tokenizer`` and we lower-case all of Unicode.)
    Left out: strings where lower-casing first makes a special token ("<Eos>" -> "<eos>"), which
    ``Siglip2Tokenizer`` and we match before the normaliser, i.e. in the original case only.
    """
    specials = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")
    texts = _unless(lambda text: any(text.lower().count(s) != text.count(s) for s in specials))
    reference = transformers.GemmaTokenizer.from_pretrained(
        gemma_dir, add_bos_token=False, add_eos_token=True, padding_side="right"
    )
    lowered = [t.replace("Σ", "σ").lower() for t in texts]
    theirs = reference(lowered, padding="max_length", truncation=True, max_length=64)["input_ids"]
    _assert_same(texts, _ids(spm_tokenizer(gemma_dir / "tokenizer.model", "gemma"), texts), theirs)


def _lit_reference(model: Path, length: int = 16) -> Callable[[str], list[int]]:
    """vit_jax's ``SentencepieceTokenizer``: encode, keep ``length - 1`` pieces, ``</s>``, pad ``</s>``."""
    processor = spm.SentencePieceProcessor(model_file=str(model))
    eos = processor.eos_id()

    def encode(text: str) -> list[int]:
        ids = [*processor.encode(text)[: length - 1], eos]
        return ids + [eos] * (length - len(ids))

    return encode


def test_lit_spm_matches_sentencepiece(unigram: Path) -> None:
    """Literal control pieces are left out: ``tokenizers``' Unigram matches ``</s>``, ``<pad>`` or ``<unk>``
    written in the text as that piece, SentencePiece spells it out character by character."""
    texts = _without(("</s>", "<pad>", "<unk>"))
    reference = _lit_reference(unigram)
    ours = _ids(spm_tokenizer(unigram, "lit"), texts)
    _assert_same(texts, ours, [reference(t) for t in texts])
    assert all(ids[-1] == 1 for ids in ours)  # the pooled last position is always </s>


def test_lit_bert_matches_big_vision_test_vectors(tmp_path: Path) -> None:
    """big_vision's ``bert_ops_test.py``: ``[CLS]`` first, no ``[SEP]``, zero padding, max_len 5."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "more", "than", "one", "[CLS]", "[SEP]"]) + "\n")
    tokenizer = wordpiece_tokenizer(vocab, context_length=5)
    assert _ids(tokenizer, ["one more", "more than one", ""]) == [
        [5, 4, 2, 0, 0],
        [5, 2, 3, 4, 0],
        [5, 0, 0, 0, 0],
    ]


@pytest.mark.parametrize("implementation", ["python", "tokenizers"])
def test_lit_bert_matches_transformers_bert(implementation: str, vocab_txt: Path) -> None:
    """transformers' BERT tokenisation (``do_lower_case=True``), less ``[SEP]``, ``[CLS]`` + 15 pieces.

    Independence is limited: transformers 5's ``BertTokenizer`` is built on ``tokenizers``, so the Python
    one (``BertTokenizerLegacy``, the former slow tokenizer) is checked as well, and neither is TF Text,
    which LiT used. Left out or adjusted, with the reason:

    * literal ``[CLS]``/``[SEP]``/``[PAD]``/``[UNK]``: transformers keeps them whole as special tokens,
      TF Text (and ours) splits them like any text;
    * "Σ" goes to the Python reference as "σ": Python's ``lower()`` gives a word-final sigma as "ς",
      TF Text's case folding and ``tokenizers`` give "σ".

    Known residual differences from TF Text, not exercised here: it case-folds (``ß`` -> ``ss``) where
    we lower-case, and limits words to 100 bytes where we limit them to 100 characters.
    """
    texts = _without(("[CLS]", "[SEP]", "[PAD]", "[UNK]"))
    if implementation == "python":
        from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

        reference = BertTokenizerLegacy(str(vocab_txt), do_lower_case=True)
        inputs = [t.replace("Σ", "σ") for t in texts]
    else:
        reference = transformers.BertTokenizer(str(vocab_txt), do_lower_case=True)
        inputs = texts
    cls, pad = reference.cls_token_id, reference.pad_token_id
    pieces = reference(inputs, add_special_tokens=False)["input_ids"]
    theirs = [([cls, *p[:15]] + [pad] * 15)[:16] for p in pieces]
    _assert_same(texts, _ids(wordpiece_tokenizer(vocab_txt), texts), theirs)


def test_every_tokenizer_has_a_fixed_length(unigram: Path, gemma_dir: Path, vocab_txt: Path) -> None:
    cases = [
        (spm_tokenizer(unigram, "siglip"), 64, 1),
        (spm_tokenizer(gemma_dir / "tokenizer.model", "gemma"), 64, 0),
        (spm_tokenizer(unigram, "lit"), 16, 1),
        (spm_tokenizer(unigram, "siglip", context_length=16), 16, 1),
        (wordpiece_tokenizer(vocab_txt), 16, 0),
    ]
    for tokenizer, length, pad_id in cases:
        assert {len(ids) for ids in _ids(tokenizer, TEXTS)} == {length}
        assert tokenizer.truncation["max_length"] == length
        assert (tokenizer.padding["length"], tokenizer.padding["pad_id"]) == (length, pad_id)
        saved = Tokenizer.from_str(tokenizer.to_str())  # what a bundle's tokenizer.json holds
        assert _ids(saved, TEXTS[:50]) == _ids(tokenizer, TEXTS[:50])


def test_lit_tokenizer_picks_by_suffix(unigram: Path, vocab_txt: Path, tmp_path: Path) -> None:
    assert lit_tokenizer(vocab_txt).encode("a photo").ids[0] == 2  # [CLS]
    lit_model = tmp_path / "LiT-L16S.model"
    lit_model.write_bytes(unigram.read_bytes())
    assert lit_tokenizer(lit_model).encode("a photo").ids[-1] == 1  # </s>
    with pytest.raises(ValueError, match=r"\.txt.*\.model.*'\.json'"):
        lit_tokenizer(tmp_path / "tokenizer.json")
    with pytest.raises(ValueError, match="flavour"):
        spm_tokenizer(unigram, "t5")  # type: ignore[arg-type]


def test_building_needs_no_sentencepiece_and_leaves_transformers_working(gemma_dir: Path) -> None:
    """Without ``sentencepiece`` importable, the files still convert; after a conversion, transformers
    still loads Gemma's ``tokenizer.model`` with ``sentencepiece`` (no protobuf registration clash)."""
    code = (
        "import sys; sys.modules['sentencepiece'] = None\n"
        "from training.tokenizer_files import spm_tokenizer\n"
        f"print(spm_tokenizer({str(gemma_dir / 'tokenizer.model')!r}, 'gemma').encode('A Dog').ids[:3])\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    ours = spm_tokenizer(gemma_dir / "tokenizer.model", "gemma").encode("A Dog").ids
    assert run.stdout.strip() == str(ours[:3])
    reference = transformers.GemmaTokenizer.from_pretrained(
        gemma_dir, add_bos_token=False, add_eos_token=True
    )
    assert reference("a dog")["input_ids"] == ours[: ours.index(1) + 1]
