"""Named label sets that survive restarts (DESIGN §4 label-set routes, §6 limits).

Stores behind one protocol, chosen by URL with ``open_label_store``: a folder of JSON files (one per
set) or a SQLite database for a single machine, or Redis (``service/redis_label_store.py``) when
several gateway replicas must share their label sets. A write either lands completely or not at all:
concurrent PUTs of one name leave exactly one of the sets that were sent, never a mix, and a bad request
never damages a stored set.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field, ValidationError, field_validator

from lit_bundle.atomic import fsync_dir, remove_stale, write_atomic
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


def _stamped(label_set: LabelSet, previous: LabelSet | None) -> LabelSet:
    created = previous.created_at if previous is not None else label_set.created_at
    return label_set.model_copy(update={"created_at": created, "updated_at": utc_now()})


class FileLabelStore:
    """One ``<name>.json`` per set in one folder, each replaced atomically.

    A write goes to a hidden temp file in the same folder, is fsynced, then ``os.replace``d over the set's
    file (:mod:`lit_bundle.atomic`), so a reader or a concurrent writer sees either the old or a new
    complete file; the last rename wins. Temp files never match a set name; those of dead writers are
    removed at start.
    Names are case-sensitive; on a case-insensitive filesystem ``Pets`` and ``pets`` would collide.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).expanduser()
        self.directory.mkdir(parents=True, exist_ok=True)
        remove_stale(self.directory)

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def _read(self, path: Path) -> LabelSet:
        try:
            label_set = LabelSet.model_validate_json(path.read_bytes())
        except (ValidationError, ValueError, UnicodeDecodeError) as error:
            raise CorruptLabelSetError(str(path), _short(error)) from error
        if f"{label_set.name}.json" != path.name:
            raise CorruptLabelSetError(str(path), f"it holds the set {label_set.name!r}")
        return label_set

    def get(self, name: str) -> LabelSet | None:
        if not valid_name(name):
            return None
        try:
            return self._read(self._path(name))
        except FileNotFoundError:
            return None

    def put(self, label_set: LabelSet) -> LabelSet:
        try:
            previous = self.get(label_set.name)
        except CorruptLabelSetError as error:
            log.warning("%s; replacing it", error)
            previous = None
        stored = _stamped(label_set, previous)
        write_atomic(self._path(label_set.name), stored.model_dump_json())
        return stored

    def delete(self, name: str) -> bool:
        if not valid_name(name):
            return False
        try:
            self._path(name).unlink()
        except FileNotFoundError:
            return False
        fsync_dir(self.directory)
        return True

    def list(self) -> list[LabelSet]:
        sets: list[LabelSet] = []
        for path in sorted(self.directory.glob("*.json")):
            if not valid_name(path.name.removesuffix(".json")):
                continue
            try:
                sets.append(self._read(path))
            except FileNotFoundError:
                continue  # deleted while listing
            except CorruptLabelSetError as error:
                log.warning("skipping %s", error)
        return sets

    def close(self) -> None:
        pass


class SqliteLabelStore:
    """One table in a SQLite database in WAL mode (readers never block the writer).

    One connection shared by the store's threads (``check_same_thread=False``) behind a lock: calls are
    short, SQLite serialises writers anyway, and a single connection is closed deterministically. Each
    ``put`` is one UPSERT in its own ``BEGIN IMMEDIATE`` transaction, so other processes on the same file
    (several gateway workers) also see whole sets only; ``busy_timeout`` makes them wait, not fail.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS label_sets ("
                " name TEXT PRIMARY KEY, body TEXT NOT NULL,"
                " created_at TEXT NOT NULL, updated_at TEXT NOT NULL)"
            )

    def _row_to_set(self, name: str, body: str, created_at: str, updated_at: str) -> LabelSet:
        try:
            content = json.loads(body)
            stamps = {"name": name, "created_at": created_at, "updated_at": updated_at}
            return LabelSet.model_validate({**content, **stamps})
        except (ValidationError, ValueError, TypeError) as error:
            raise CorruptLabelSetError(f"{self.path}#{name}", _short(error)) from error

    def get(self, name: str) -> LabelSet | None:
        if not valid_name(name):
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT name, body, created_at, updated_at FROM label_sets WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else self._row_to_set(*row)

    def put(self, label_set: LabelSet) -> LabelSet:
        body = json.dumps({"labels": label_set.labels, "templates": label_set.templates}, ensure_ascii=False)
        now = utc_now()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO label_sets (name, body, created_at, updated_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT(name) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
                    (label_set.name, body, label_set.created_at, now),
                )
                (created_at,) = self._db.execute(
                    "SELECT created_at FROM label_sets WHERE name = ?", (label_set.name,)
                ).fetchone()
                self._db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
        return label_set.model_copy(update={"created_at": created_at, "updated_at": now})

    def delete(self, name: str) -> bool:
        if not valid_name(name):
            return False
        with self._lock:
            cursor = self._db.execute("DELETE FROM label_sets WHERE name = ?", (name,))
        return cursor.rowcount > 0

    def list(self) -> list[LabelSet]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, body, created_at, updated_at FROM label_sets ORDER BY name"
            ).fetchall()
        sets: list[LabelSet] = []
        for row in rows:
            try:
                sets.append(self._row_to_set(*row))
            except CorruptLabelSetError as error:
                log.warning("skipping %s", error)
        return sets

    def close(self) -> None:
        with self._lock:
            self._db.close()


SUPPORTED_URLS = "file:///path/to/dir (or a bare path), sqlite:///path/to/db.sqlite, redis://host:6379/0"


def open_label_store(url: str) -> LabelStore:
    """A store from a URL: ``file:///dir`` or a bare path -> files; ``sqlite:///file`` -> SQLite;
    ``redis://[user:password@]host:port/db`` (or ``rediss://`` for TLS) -> Redis.

    Everything after ``scheme://`` is the path, so ``sqlite:///abs/db`` is absolute and
    ``sqlite://rel/db`` relative (unlike SQLAlchemy's four-slash convention).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return FileLabelStore(Path(url))
    scheme = scheme.lower()
    if not rest:
        raise ValueError(f"label store URL {url!r} has no path; supported: {SUPPORTED_URLS}")
    if scheme == "file":
        return FileLabelStore(Path(rest))
    if scheme == "sqlite":
        return SqliteLabelStore(Path(rest))
    if scheme in {"redis", "rediss"}:
        from service.redis_label_store import RedisLabelStore

        return RedisLabelStore(url)
    raise ValueError(f"unsupported label store URL scheme {scheme!r}; supported: {SUPPORTED_URLS}")


def _short(error: Exception) -> str:
    """One line on why a stored entry did not parse."""
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"{where + ': ' if where else ''}{first['msg']}"
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
