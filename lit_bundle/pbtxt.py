"""A minimal reader and editor of protobuf text format (``config.pbtxt``), needing no protobuf.

The embedded gateway image has no ``tritonclient`` yet must read the active version of a config
(:func:`parse_text`, enough for the configs ``lit_bundle.triton`` writes and hand edits of them), and a
promotion replaces a few top-level fields of an operator's config while keeping the rest of its text,
comments included (:func:`splice`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

_PUNCT = "{}[]<>:,;"
_CLOSE = {"{": "}", "<": ">"}


def _tokens(text: str) -> Iterator[tuple[str, str]]:
    """Yield ``(kind, value)`` with kind ``p`` (punctuation), ``s`` (string) or ``w`` (word/number)."""
    for kind, value, _, _ in _spanned_tokens(text):
        yield kind, value


def _spanned_tokens(text: str) -> Iterator[tuple[str, str, int, int]]:
    """Yield ``(kind, value, start, end)``: :func:`_tokens` with where each token lies in ``text``."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif c in _PUNCT:
            yield "p", c, i, i + 1
            i += 1
        elif c in "\"'":
            j, chars = i + 1, []
            while j < n and text[j] != c:
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                chars.append(text[j])
                j += 1
            if j >= n:
                raise ValueError("unterminated string in config.pbtxt")
            yield "s", "".join(chars), i, j + 1
            i = j + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in _PUNCT + "#\"'":
                j += 1
            yield "w", text[i:j], i, j
            i = j


def parse_text(text: str) -> dict[str, list[Any]]:
    """Parse text format into ``{field: [values]}``; messages become nested dicts, lists are flattened."""
    tokens = [*_tokens(text), ("p", "")]  # "" marks the end
    pos = 0

    def expect_value() -> Any:
        nonlocal pos
        kind, value = tokens[pos]
        pos += 1
        if kind == "p" and value in _CLOSE:
            return message(_CLOSE[value])
        if kind == "p":
            raise ValueError(f"config.pbtxt: unexpected {value or 'end of file'!r}")
        return value

    def message(closing: str) -> dict[str, list[Any]]:
        nonlocal pos
        fields: dict[str, list[Any]] = {}
        while True:
            kind, value = tokens[pos]
            pos += 1
            if kind == "p" and value == closing:
                return fields
            if kind == "p" and value in (",", ";"):
                continue
            if kind != "w":
                raise ValueError(f"config.pbtxt: expected a field name, got {value or 'end of file'!r}")
            values = fields.setdefault(value, [])
            if tokens[pos] == ("p", ":"):
                pos += 1
            if tokens[pos] == ("p", "["):
                pos += 1
                while tokens[pos] != ("p", "]"):
                    values.append(expect_value())
                    if tokens[pos] == ("p", ","):
                        pos += 1
                pos += 1
            else:
                values.append(expect_value())

    return message("")


_OPENING, _CLOSING = "{[<", "}]>"


def _top_level_fields(text: str) -> list[tuple[str, int, int]]:
    """``(name, start, end)`` of each top-level field of a text-format message, in order."""
    tokens = list(_spanned_tokens(text))

    def token(i: int) -> tuple[str, str, int, int]:
        if i >= len(tokens):
            raise ValueError("config.pbtxt ends inside a field")
        return tokens[i]

    fields, i = [], 0
    while i < len(tokens):
        kind, name, start, _ = tokens[i]
        i += 1
        if kind == "p" and name in ",;":
            continue
        if kind != "w":
            raise ValueError(f"config.pbtxt: expected a field name at offset {start}, got {name!r}")
        if token(i)[:2] == ("p", ":"):
            i += 1
        kind, value, _, _ = token(i)
        if kind == "p" and value in _OPENING:
            depth = 0
            while True:
                kind, value, _, _ = token(i)
                depth += (kind == "p" and value in _OPENING) - (kind == "p" and value in _CLOSING)
                i += 1
                if depth == 0:
                    break
        elif kind == "s":  # adjacent strings are one value
            while i < len(tokens) and tokens[i][0] == "s":
                i += 1
        else:
            i += 1
        fields.append((name, start, tokens[i - 1][3]))
    return fields


def splice(text: str, fields: dict[str, str]) -> str:
    """Replace the top-level ``fields`` of ``text`` by the given text: at a field's first occurrence (its
    others removed), else before the first field. Everything else, comments included, stays as it is."""
    spans = _top_level_fields(text)
    edits: list[tuple[int, int, str]] = []
    seen: set[str] = set()
    for name, start, end in spans:
        if name not in fields:
            continue
        if name in seen:
            line = text.rfind("\n", 0, start) + 1
            if not text[line:start].strip():
                start = line
            while end < len(text) and text[end] in " \t,;":
                end += 1
            edits.append((start, end + text.startswith("\n", end), ""))
        else:
            edits.append((start, end, fields[name]))
            seen.add(name)
    missing = [value for name, value in fields.items() if name not in seen]
    if missing:
        if spans:
            edits.append((spans[0][1], spans[0][1], "\n".join(missing) + "\n"))
        else:
            edits.append((len(text), len(text), ("\n" if text.strip() else "") + "\n".join(missing) + "\n"))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def without_header(text: str, headers: Sequence[str]) -> str:
    for header in headers:
        if text.startswith(header + "\n"):
            return text[len(header) + 1 :]
    return text


def first(fields: dict[str, list[Any]], name: str) -> Any:
    values = fields.get(name) or [None]
    return values[-1]  # text format: the last occurrence of a singular field wins
