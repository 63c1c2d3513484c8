"""Label sets in Redis, shared by every gateway replica (``LIT_LABEL_STORE=redis://host:6379/0``).

Each set is one hash (``body`` JSON, ``created_at``, ``updated_at``) under ``lit:label-set:<name>``, and
``lit:label-set-names`` indexes the names. A put is one Lua script (Redis runs scripts atomically), so
concurrent writers from any replica leave exactly one complete set and the first ``created_at``; a
delete removes the hash and the name in one transaction. Replicas read the store on every request that
names a set, so a set changed on one replica is used by the others on their next request.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TypeVar, cast

import redis

from service.label_store import CorruptLabelSetError, LabelSet, LabelStoreUnavailable, utc_now, valid_name

log = logging.getLogger(__name__)

T = TypeVar("T")

PREFIX = "lit:label-set:"
NAMES = "lit:label-set-names"

# KEYS[1] = the set's hash, KEYS[2] = the name index; ARGV = name, body, now, created_at if new.
_PUT = """
local created = redis.call('HGET', KEYS[1], 'created_at') or ARGV[4]
redis.call('HSET', KEYS[1], 'body', ARGV[2], 'created_at', created, 'updated_at', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
return created
"""


class RedisLabelStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self._redis = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30
        )
        self._put = self._redis.register_script(_PUT)

    def _call(self, work: Callable[[], T]) -> T:
        try:
            return work()
        except redis.RedisError as exc:
            where = self.url.split("@")[-1]  # never log a password from the URL
            raise LabelStoreUnavailable(
                f"the Redis label store at {where} failed ({type(exc).__name__}: {exc}): check that Redis "
                "is running and LIT_LABEL_STORE points at it"
            ) from None

    def _to_set(self, name: str, fields: dict[str, str]) -> LabelSet:
        try:
            body = json.loads(fields["body"])
            stamps = {"name": name, "created_at": fields["created_at"], "updated_at": fields["updated_at"]}
            return LabelSet.model_validate({**body, **stamps})
        except (KeyError, ValueError, TypeError) as error:
            raise CorruptLabelSetError(f"redis {PREFIX}{name}", str(error).splitlines()[0]) from error

    def get(self, name: str) -> LabelSet | None:
        if not valid_name(name):
            return None
        # decode_responses=True: Redis answers str, which redis-py's types (bytes | str) cannot tell.
        fields = cast(dict[str, str], self._call(lambda: self._redis.hgetall(PREFIX + name)))
        return self._to_set(name, fields) if fields else None

    def put(self, label_set: LabelSet) -> LabelSet:
        body = json.dumps({"labels": label_set.labels, "templates": label_set.templates}, ensure_ascii=False)
        now = utc_now()
        keys = [PREFIX + label_set.name, NAMES]
        created = self._call(
            lambda: self._put(keys=keys, args=[label_set.name, body, now, label_set.created_at])
        )
        return label_set.model_copy(update={"created_at": created, "updated_at": now})

    def delete(self, name: str) -> bool:
        if not valid_name(name):
            return False

        def remove() -> int:
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(PREFIX + name)
            pipe.srem(NAMES, name)
            removed: int = pipe.execute()[0]
            return removed

        return bool(self._call(remove))

    def list(self) -> list[LabelSet]:
        def read_all() -> list[tuple[str, dict[str, str]]]:
            names = sorted(cast(set[str], self._redis.smembers(NAMES)))  # str: decode_responses=True
            pipe = self._redis.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(PREFIX + name)
            return list(zip(names, pipe.execute(), strict=True))

        sets: list[LabelSet] = []
        for name, fields in self._call(read_all):
            if not fields:
                continue  # deleted while listing
            try:
                sets.append(self._to_set(name, fields))
            except CorruptLabelSetError as error:
                log.warning("skipping %s", error)
        return sets

    def close(self) -> None:
        self._redis.close()
