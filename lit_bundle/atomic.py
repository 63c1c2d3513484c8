"""Crash-safe writes: whoever reads a path sees its old complete content or its new one, never a part.

Everything is first written to a temporary beside its target (same file system, so the final rename is
atomic), flushed to disk with fsync, then renamed into place, and the folder is fsync'd so the rename
itself survives a power cut. Temporaries are hidden and named
``<prefix><name>~<host>~<pid>~<random>``: no reader's name or glob matches them, and ``remove_stale``
can tell which belong to a writer that died (SIGKILL, out of memory, power loss) and delete those
without touching a live writer's.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TMP_PREFIX = ".tmp-"
_SEP = "~"


def _tag(name: str, prefix: str = TMP_PREFIX) -> str:
    return f"{prefix}{name}{_SEP}{socket.gethostname()}{_SEP}{os.getpid()}{_SEP}"


def fsync_dir(directory: Path) -> None:
    """Make renames and new entries in ``directory`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (before renaming a staged folder into place)."""
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(folder))


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; once the block ends without error it replaces ``path``.

    For writers that want a file name (``safetensors.save_file``, ``onnx.save``). On error, or a kill,
    ``path`` keeps its old content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=_tag(path.name), dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; other users (a server, Triton) may read it
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, content: str | bytes | Callable[[IO[Any]], None], binary: bool = False) -> None:
    """Write text, bytes, or whatever ``content(file)`` writes, to ``path`` atomically."""
    binary = binary or isinstance(content, bytes)
    mode, encoding = ("wb", None) if binary else ("w", "utf-8")
    with replacing(path) as tmp, open(tmp, mode, encoding=encoding) as handle:
        if callable(content):
            content(handle)
        else:
            handle.write(content)


@contextmanager
def staging_dir(parent: Path, name: str, prefix: str = TMP_PREFIX) -> Iterator[Path]:
    """Yield a new hidden folder in ``parent`` to fill and then ``commit_dir``; removed if left behind."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=_tag(name, prefix), dir=parent))
    staging.chmod(0o755)  # mkdtemp makes it private
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def commit_dir(staging: Path, target: Path, replace: bool = False) -> None:
    """Make the filled ``staging`` folder appear as ``target`` in one rename, after flushing it to disk.

    With ``replace``, an existing ``target`` is first moved aside under a temporary name (so a reader
    sees the old folder, then briefly none, then the new one; never a mix). Without it an existing
    ``target`` raises ``OSError`` and is left alone.
    """
    fsync_tree(staging)
    old = None
    if replace and target.exists():
        old = Path(tempfile.mkdtemp(prefix=_tag(target.name + ".old"), dir=target.parent))
        os.replace(target, old / target.name)
    os.rename(staging, target)
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _writer_is_gone(host: str, pid: str) -> bool:
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's (shared file system) or not ours: cannot tell, keep it
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def remove_stale(parent: Path, prefix: str = TMP_PREFIX) -> list[Path]:
    """Delete temporaries in ``parent`` whose writer on this machine no longer runs; returns them."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    removed = []
    for entry in parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        parts = entry.name.rsplit(_SEP, 3)
        if len(parts) != 4 or not _writer_is_gone(parts[1], parts[2]):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed
