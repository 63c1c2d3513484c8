"""Label-set stores (files, SQLite, real Redis): round trips, restarts, concurrent writers, bad entries."""

from __future__ import annotations

import logging
import multiprocessing
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from service.label_store import (
    CorruptLabelSetError,
    LabelError,
    LabelSet,
    LabelStore,
    LabelStoreUnavailable,
    validate_labels,
)
from service.label_stores import open_label_store
from service.local_label_stores import FileLabelStore, SqliteLabelStore
from service.redis_label_store import NAMES, PREFIX, RedisLabelStore
from tests.redis_server import running_redis

Opener = Callable[[], LabelStore]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(params=["file", "sqlite", "redis"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens a (new) store object on the same location each call, as a restarted gateway would."""
    if request.param == "file":
        return lambda: FileLabelStore(tmp_path / "sets")
    if request.param == "sqlite":
        return lambda: SqliteLabelStore(tmp_path / "db" / "sets.sqlite")
    url = request.getfixturevalue("redis_url")
    redis.Redis.from_url(url).flushdb()
    return lambda: RedisLabelStore(url)


def _writer_labels(writer: int, count: int = 300) -> list[str]:
    return [f"w{writer}-label-{k}" for k in range(count)]


def test_round_trip_and_restart(opener: Opener) -> None:
    store = opener()
    assert store.get("pets") is None and store.list() == [] and not store.delete("pets")
    stored = store.put(LabelSet(name="pets", labels=["cat", "dog"], templates=["a photo of a {}."]))
    assert store.put(LabelSet(name="cars", labels=["sedan"])).templates is None
    got = store.get("pets")
    assert got == stored and got.labels == ["cat", "dog"] and got.templates == ["a photo of a {}."]
    store.close()

    reopened = opener()
    assert [s.name for s in reopened.list()] == ["cars", "pets"]
    assert reopened.get("pets") == stored
    replaced = reopened.put(LabelSet(name="pets", labels=["bird"]))
    assert replaced.created_at == stored.created_at and replaced.updated_at >= stored.updated_at
    assert reopened.get("pets").labels == ["bird"]
    assert reopened.delete("pets") and reopened.get("pets") is None and not reopened.delete("pets")
    # Names that could escape the folder or are otherwise invalid are simply not found.
    assert reopened.get("../pets") is None and not reopened.delete("../x")
    reopened.close()


def test_label_set_validation() -> None:
    for bad in ["", ".hidden", "a/b", "..", "x" * 65, "sp ace"]:
        with pytest.raises(ValueError):
            LabelSet(name=bad, labels=["cat"])
    with pytest.raises(ValueError):
        LabelSet(name="ok", labels=[])
    with pytest.raises(ValueError, match="exactly one"):
        LabelSet(name="ok", labels=["cat"], templates=["no slot"])
    assert LabelSet(name="A.b_c-9", labels=["cat"]).name == "A.b_c-9"


def test_concurrent_puts_from_threads_leave_one_complete_set(opener: Opener) -> None:
    shared = opener()
    candidates = [_writer_labels(i) for i in range(8)]
    stores = [shared if i % 2 else opener() for i in range(8)]  # shared object and separate ones
    errors: list[BaseException] = []
    seen_partial: list[list[str]] = []

    def writer(i: int) -> None:
        try:
            for _ in range(5):
                stores[i].put(LabelSet(name="race", labels=candidates[i]))
                current = stores[i].get("race")
                if current.labels not in candidates:
                    seen_partial.append(current.labels)
        except BaseException as error:  # reported to the main thread
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and seen_partial == []
    assert opener().get("race").labels in candidates
    assert [s.name for s in shared.list()] == ["race"]


def _process_writer(directory: str, writer: int) -> None:
    store = FileLabelStore(Path(directory))
    for _ in range(10):
        store.put(LabelSet(name="race", labels=_writer_labels(writer)))


def test_file_store_concurrent_puts_from_processes(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_process_writer, args=(str(tmp_path), i)) for i in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0, 0]
    store = FileLabelStore(tmp_path)
    assert store.get("race").labels in (_writer_labels(0), _writer_labels(1))
    assert [p.name for p in tmp_path.iterdir()] == ["race.json"]  # no temp files left behind


def test_file_store_ignores_temp_files_and_reports_corrupt_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FileLabelStore(tmp_path)
    store.put(LabelSet(name="good", labels=["cat"]))
    (tmp_path / ".good.x1y2.tmp").write_text('{"name": "good", "labels": ["half')
    (tmp_path / ".other.x1y2.tmp").write_text("")
    (tmp_path / "bad.json").write_text('{"name": "bad", "labels": ["cat"')
    (tmp_path / "wrong.json").write_text(LabelSet(name="good", labels=["x"]).model_dump_json())

    with pytest.raises(CorruptLabelSetError, match=r"bad\.json") as raised:
        store.get("bad")
    assert raised.value.source == str(tmp_path / "bad.json")
    with pytest.raises(CorruptLabelSetError, match="holds the set 'good'"):
        store.get("wrong")
    assert store.get("good").labels == ["cat"] and store.get("other") is None

    with caplog.at_level(logging.WARNING, logger="service.label_store"):
        assert [s.name for s in store.list()] == ["good"]
    assert "bad.json" in caplog.text and "wrong.json" in caplog.text

    # A corrupt set can be overwritten by a good PUT.
    store.put(LabelSet(name="bad", labels=["dog"]))
    assert store.get("bad").labels == ["dog"]


def test_sqlite_store_reports_corrupt_rows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "sets.sqlite"
    store = SqliteLabelStore(path)
    store.put(LabelSet(name="good", labels=["cat"]))
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO label_sets VALUES ('bad', 'not json', 'x', 'x')")
    with pytest.raises(CorruptLabelSetError, match="#bad"):
        store.get("bad")
    with caplog.at_level(logging.WARNING, logger="service.label_store"):
        assert [s.name for s in store.list()] == ["good"]
    assert "#bad" in caplog.text
    store.close()


def test_open_label_store_schemes(tmp_path: Path) -> None:
    by_url = open_label_store(f"file://{tmp_path / 'a'}")
    assert isinstance(by_url, FileLabelStore) and by_url.directory == tmp_path / "a"
    bare = open_label_store(str(tmp_path / "b"))
    assert isinstance(bare, FileLabelStore) and (tmp_path / "b").is_dir()
    db = open_label_store(f"sqlite://{tmp_path / 'c' / 'sets.sqlite'}")
    assert isinstance(db, SqliteLabelStore) and (tmp_path / "c" / "sets.sqlite").is_file()
    db.close()
    assert isinstance(open_label_store("redis://localhost:6379/0"), RedisLabelStore)
    with pytest.raises(ValueError, match=r"unsupported.*'s3'.*file://"):
        open_label_store("s3://bucket/sets")


def test_validate_labels_limits() -> None:
    assert validate_labels(["  cat ", "dog", "cat", "Dog"], 10, 5) == ["cat", "dog", "Dog"]
    cases = [
        ([], "empty_labels", "must not be empty"),
        (["a"] * 11, "too_many_labels", "at most 10"),
        (["ok", "x" * 6], "label_too_long", "label 1 has 6 characters; the limit is 5"),
        (["ok", "   "], "blank_label", "label 1 is blank"),
    ]
    for labels, code, message in cases:
        with pytest.raises(LabelError, match=message) as raised:
            validate_labels(labels, 10, 5)
        assert raised.value.code == code and isinstance(raised.value, ValueError)
    assert validate_labels([" " + "x" * 5 + " "], 1, 5) == ["xxxxx"]  # length counted after stripping


def test_redis_store_reports_corrupt_entries(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    store = RedisLabelStore(redis_url)
    store.put(LabelSet(name="good", labels=["cat"]))
    client.hset(PREFIX + "bad", mapping={"body": "{not json", "created_at": "x", "updated_at": "x"})
    client.sadd(NAMES, "bad")
    with pytest.raises(CorruptLabelSetError, match="lit:label-set:bad"):
        store.get("bad")
    with caplog.at_level(logging.WARNING):
        assert [s.name for s in store.list()] == ["good"]
    assert "skipping" in caplog.text and "bad" in caplog.text
    store.close()


def test_redis_store_down_is_an_unavailable_store_without_the_password() -> None:
    from harness.gateway import free_port

    store = RedisLabelStore(f"redis://user:s3cret@127.0.0.1:{free_port()}/0")
    with pytest.raises(LabelStoreUnavailable, match="check that Redis is running") as raised:
        store.get("pets")
    assert "s3cret" not in str(raised.value)
