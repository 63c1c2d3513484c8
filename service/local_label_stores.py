"""Label stores for one machine: a folder of JSON files (one per set) or a SQLite database.

A write either lands completely or not at all: concurrent PUTs of one name leave exactly one of the sets
that were sent, never a mix, and a bad request never damages a stored set.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
from pathlib import Path

from pydantic import ValidationError

from lit_bundle.atomic import fsync_dir, remove_stale, write_atomic
from service.label_store import (
    CorruptLabelSetError,
    LabelSet,
    short_reason,
    stamped,
    utc_now,
    valid_name,
)

log = logging.getLogger(__name__)


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
            raise CorruptLabelSetError(str(path), short_reason(error)) from error
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
        stored = stamped(label_set, previous)
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
            raise CorruptLabelSetError(f"{self.path}#{name}", short_reason(error)) from error

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
