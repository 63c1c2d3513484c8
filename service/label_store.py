"""Named label sets that survive restarts: what a label set is, the rules its labels follow, and the one
protocol every store implements.

The stores (``service.local_label_stores``: a folder of JSON files or a SQLite database for one machine;
``service.redis_label_store`` when several gateway replicas must share their label sets) are chosen by URL
with ``service.label_stores.open_label_store``. A write either lands completely or not at all:
concurrent PUTs of one name leave exactly one of the sets that were sent, never a mix, and a bad request
never damages a stored set.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from pydantic import BaseModel, Field, ValidationError, field_validator

from lit_bundle.prompts import check_templates
from service.errors import ApiError, CodedError

log = logging.getLogger(__name__)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def valid_name(name: str) -> bool:
    """Names double as file names: the pattern excludes separators, ``..`` and hidden (dot) files."""
    return bool(_NAME_RE.fullmatch(name))


class LabelError(ApiError, ValueError):
    """A label list that breaks a rule; ``code`` is the API error code (snake_case).

    Codes: ``empty_labels``, ``too_many_labels``, ``label_too_long``, ``blank_label``; ``index`` is the
    offending label's position in the list as sent, where there is one.
    """

    def __init__(self, code: str, message: str, index: int | None = None) -> None:
        super().__init__(code, message)
        self.index = index


def validate_labels(labels: Sequence[str], max_labels: int, max_label_chars: int) -> list[str]:
    """Strip whitespace, enforce the limits, drop duplicates keeping each label's first occurrence.

    The count limit applies to the list as sent (checked first, before any per-label work), so a list
    over the limit is refused even if it has duplicates. Lengths are counted in characters after stripping.
    """
    if not labels:
        raise LabelError("empty_labels", "labels must not be empty; send at least one candidate label")
    if len(labels) > max_labels:
        raise LabelError(
            "too_many_labels", f"{len(labels)} labels sent; at most {max_labels} are allowed per request/set"
        )
    cleaned: list[str] = []
    seen: set[str] = set()
    for index, raw in enumerate(labels):
        label = raw.strip()
        if not label:
            raise LabelError("blank_label", f"label {index} is blank; every label needs text", index)
        if len(label) > max_label_chars:
            raise LabelError(
                "label_too_long",
                f"label {index} has {len(label)} characters; the limit is {max_label_chars}",
                index,
            )
        if label not in seen:
            seen.add(label)
            cleaned.append(label)
    return cleaned


class LabelSet(BaseModel):
    """A stored label set; ``templates`` None means the model's default templates."""

    name: str = Field(pattern=NAME_PATTERN)
    labels: list[str] = Field(min_length=1)
    templates: list[str] | None = None
    created_at: str = Field(default_factory=utc_now)
    updated_at: str = Field(default_factory=utc_now)

    @field_validator("templates")
    @classmethod
    def _templates_have_placeholder(cls, templates: list[str] | None) -> list[str] | None:
        if templates is None:
            return None
        if not templates:
            raise ValueError("templates must not be empty; omit them to use the model's defaults")
        return list(check_templates(templates))


class CorruptLabelSetError(RuntimeError):
    """A stored label set that cannot be read back; ``source`` names the file or database row."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"label set store entry {source} is unreadable: {reason}")
        self.source = source
        self.reason = reason


class LabelStoreUnavailable(CodedError):
    """The store cannot be reached (a Redis server down): the request gets 503, the gateway lives on."""

    CODE = "label_store_unavailable"


class LabelStore(Protocol):
    def get(self, name: str) -> LabelSet | None:
        """The set, None if absent (or the name is invalid); CorruptLabelSetError if unreadable."""
        ...

    def put(self, label_set: LabelSet) -> LabelSet:
        """Create or replace; keeps the first ``created_at``, sets ``updated_at``; returns what was stored."""
        ...

    def delete(self, name: str) -> bool:
        """True if a set was removed."""
        ...

    def list(self) -> list[LabelSet]:
        """All readable sets sorted by name; unreadable ones are skipped and logged as warnings."""
        ...

    def close(self) -> None: ...


def stamped(label_set: LabelSet, previous: LabelSet | None) -> LabelSet:
    created = previous.created_at if previous is not None else label_set.created_at
    return label_set.model_copy(update={"created_at": created, "updated_at": utc_now()})


def short_reason(error: Exception) -> str:
    """One line on why a stored entry did not parse."""
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"{where + ': ' if where else ''}{first['msg']}"
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
