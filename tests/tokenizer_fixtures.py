"""Test material for tokenizers: 1,000 varied strings and tiny real SentencePiece / BERT vocabularies.

Everything is deterministic and built offline in a second: the SentencePiece models are trained with
``sentencepiece`` on a few kilobytes of text (its trainer is what produced Google's models, so their
protobuf fields are real), the BERT vocabulary is written out by hand.
"""

from __future__ import annotations

import io
import random
import string
import unicodedata
from pathlib import Path

WORDS = [
    *["a", "photo", "of", "the", "red", "blue", "green", "circle", "square", "dog", "cat", "cats"],
    *["sleeping", "two", "three", "big", "small", "blurry", "bright", "dark", "picture", "drawing"],
    *["painting", "sculpture", "car", "bird", "tree", "house", "hello", "world", "x-ray", "it's", "don't"],
    *["Photo", "PHOTO", "McDonald", "iPhone", "eBay", "NASA"],
]
ACCENTED = [
    *["café", "naïve", "résumé", "Ångström", "façade", "jalapeño", "Zürich", "São Paulo", "Øresund"],
    *["crème brûlée", "İstanbul", "straße", "ΟΔΥΣΣΕΥΣ", "Ελληνικά", "Москва", "ǅemal", "Tiếng Việt"],
]
PUNCTUATION = [
    *[".", ",", "!", "?", "...", "!!", "?!", ";", ":", "-", "—", "–", "_", "'", '"', "(", ")", "[", "]"],
    *["{", "}", "/", "\\", "@", "#", "$", "%", "^", "&", "*", "+", "=", "<", ">", "|", "~", "`", "«", "»"],
    *["“", "”", "‘", "’", "¿", "¡", "…", "·"],
]
DIGITS = ["0", "7", "42", "123", "4567", "3.14", "1,000,000", "2024-01-31", "12:30", "#1", "v2.0", "٣", "５"]
EMOJI = ["😀", "👍", "👍🏽", "🐶", "🏳️‍🌈", "👨‍👩‍👧‍👦", "👩🏻‍💻", "❤️", "🇯🇵", "☃", "✨", "🤖"]
SCRIPTS = [
    *["日本語のテキスト", "中文字符", "한국어 텍스트", "ｆｕｌｌｗｉｄｔｈ", "مرحبا بالعالم", "שלום עולם"],
    *["हिन्दी", "ภาษาไทย", "ﬁ ligature", "x²", "½"],
]
# Literal special tokens of the tokenizers under test, rare on purpose (tests say how they are handled).
SPECIAL = ["</s>", "<unk>", "<pad>", "<eos>", "<bos>", "<mask>", "[CLS]", "[SEP]", "[PAD]", "[UNK]"]
SPECIAL += ["▁", "▁▁"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\r\n", " \t ", "\n\n", "\u00a0", "\u3000", "\u2009", "\u200b"]
SPACES += ["\x0b", "\x0c", "\x1c", "\x85", "\u2028"]
_GROUPS = [(WORDS, 100), (ACCENTED, 30), (PUNCTUATION, 30), (DIGITS, 20), (EMOJI, 10), (SCRIPTS, 10)]
_GROUPS += [(SPECIAL, 1)]
FIXED = ["", " ", "\t\n", "a", "A", "...", "a photo of a dog.", "A Photo Of Two Cats, Sleeping!", "hot_dog"]


def _fragment(rng: random.Random) -> str:
    group = rng.choices([g for g, _ in _GROUPS], weights=[w for _, w in _GROUPS])[0]
    text = rng.choice(group)
    case = rng.random()
    return text.upper() if case < 0.1 else text.title() if case < 0.2 else text


def _text(rng: random.Random, fragments: int) -> str:
    parts: list[str] = []
    for _ in range(fragments):
        gap = rng.choice(SPACES) if rng.random() < 0.25 else "" if rng.random() < 0.1 else " "
        parts += [_fragment(rng), gap]
    text = "".join(parts[:-1])
    form = rng.random()
    if form < 0.2:  # decomposed accents and Hangul jamo, or compatibility forms folded
        text = unicodedata.normalize("NFD" if form < 0.15 else "NFKC", text)
    if rng.random() < 0.15:
        text = rng.choice(SPACES) + text
    if rng.random() < 0.15:
        text += rng.choice(SPACES)
    return text


def varied_texts(count: int = 1000, seed: int = 0) -> list[str]:
    """``count`` distinct strings: a few fixed ones, mostly short phrases, some far past any context."""
    rng = random.Random(seed)
    texts, seen = list(FIXED), set(FIXED)
    texts.append("x" * 200)  # one word longer than WordPiece's 100-character limit
    while len(texts) < count:
        roll = rng.random()
        fragments = (1, 8) if roll < 0.7 else (9, 30) if roll < 0.92 else (60, 200)
        text = _text(rng, rng.randint(*fragments))
        if text not in seen:
            seen.add(text)
            texts.append(text)
    return texts[:count]


def _training_lines(count: int = 400, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    pool = [*WORDS * 4, *ACCENTED, *PUNCTUATION, *DIGITS, *SCRIPTS, "<", ">", "unk", "οδυσσευς", "σς"]
    return [" ".join(rng.choice(pool) for _ in range(rng.randint(3, 10))) for _ in range(count)]


def train_spm(path: Path, kind: str) -> Path:
    """A real SentencePiece model at ``path``: ``"unigram"`` is T5/SigLIP/LiT-like, ``"bpe"`` Gemma-like.

    Unigram: nmt_nfkc normalisation, dummy prefix, ``<pad>``=0 ``</s>``=1 ``<unk>``=2, no ``<s>``.
    BPE: identity normalisation, no dummy prefix, byte fallback, split digits, ``<pad>``=0 ``<eos>``=1
    ``<bos>``=2 ``<unk>``=3 and a user-defined ``<mask>``=4, as Gemma's.
    """
    import sentencepiece as spm

    out = io.BytesIO()
    common = {
        "sentence_iterator": iter(_training_lines()),
        "model_writer": out,
        "hard_vocab_limit": False,
        "character_coverage": 1.0,
        "num_threads": 1,
        "minloglevel": 2,
    }
    if kind == "unigram":
        spm.SentencePieceTrainer.train(
            model_type="unigram", vocab_size=200, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
            pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", **common,
        )  # fmt: skip
    elif kind == "bpe":
        spm.SentencePieceTrainer.train(
            model_type="bpe", vocab_size=700, pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>",
            eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>", byte_fallback=True,
            add_dummy_prefix=False, normalization_rule_name="identity", remove_extra_whitespaces=False,
            split_digits=True, allow_whitespace_only_pieces=True, user_defined_symbols=["<mask>"], **common,
        )  # fmt: skip
    else:
        raise ValueError(f"unknown SentencePiece model kind {kind!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out.getvalue())
    return path


def bert_vocab(path: Path) -> Path:
    """A small uncased BERT ``vocab.txt``: ``[PAD]``=0, ``[CLS]``=2, then characters, words and pieces."""
    words = {w.lower() for w in WORDS + " ".join(ACCENTED).split()}
    stripped = {unicodedata.normalize("NFD", w).encode("ascii", "ignore").decode() or w for w in words}
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += [*string.ascii_lowercase, *string.digits, *string.punctuation, "日", "本", "中", "文"]
    vocab += ["##" + c for c in string.ascii_lowercase + string.digits] + ["##s", "##ing", "##ed"]
    vocab += sorted((stripped | words) - set(vocab))  # accented forms too: never reached once stripped
    path.write_text("\n".join(vocab) + "\n")
    return path
