"""A label store from its URL (``LIT_LABEL_STORE``)."""

from __future__ import annotations

from pathlib import Path

from service.label_store import LabelStore
from service.local_label_stores import FileLabelStore, SqliteLabelStore

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
