"""``LitClient`` (blocking) and ``AsyncLitClient`` (asyncio): the same methods, one per /v1 route.

Both take their methods from one table (:class:`_Api`), built from :mod:`lit_client.calls`; a client only
knows how to send a call and how to wait between attempts.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Callable, Coroutine
from typing import Any, Generic, ParamSpec, TypeVar, overload

import httpx

from lit_client import calls
from lit_client.calls import Call, Outcome, RetryPolicy

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8000"


class _Endpoint(Generic[P, T]):
    """A client method from a function of :mod:`lit_client.calls`: same parameters and docstring, returning
    the call's result (``LitClient``) or a coroutine of it (``AsyncLitClient``)."""

    def __init__(self, describe: Callable[P, Call[T]]) -> None:
        self.describe = describe
        self.__doc__ = describe.__doc__
        self.signature = inspect.signature(describe).replace(return_annotation=inspect.Signature.empty)

    @overload
    def __get__(self, client: None, owner: type) -> _Endpoint[P, T]: ...
    @overload
    def __get__(self, client: LitClient, owner: type) -> Callable[P, T]: ...
    @overload
    def __get__(self, client: AsyncLitClient, owner: type) -> Callable[P, Coroutine[Any, Any, T]]: ...
    def __get__(self, client: Any, owner: type) -> Any:
        if client is None:
            return self
        describe = self.describe
        method: Callable[..., Any]
        if isinstance(client, AsyncLitClient):

            async def awaited(*args: Any, **kwargs: Any) -> Any:
                return await client._run(describe(*args, **kwargs))

            method = awaited
        else:

            def blocking(*args: Any, **kwargs: Any) -> Any:
                return client._run(describe(*args, **kwargs))

            method = blocking
        functools.update_wrapper(method, describe)
        # inspect.signature reads this attribute; typeshed gives functions no __signature__ to assign.
        method.__signature__ = self.signature  # type: ignore[union-attr]
        return method


class _Api:
    """Settings and the methods both clients share."""

    models = _Endpoint(calls.models)
    model = _Endpoint(calls.model)
    classify = _Endpoint(calls.classify)
    embed_images = _Endpoint(calls.embed_images)
    embed_texts = _Endpoint(calls.embed_texts)
    put_label_set = _Endpoint(calls.put_label_set)
    label_sets = _Endpoint(calls.label_sets)
    label_set = _Endpoint(calls.label_set)
    delete_label_set = _Endpoint(calls.delete_label_set)

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff_s: float = 0.2,
        max_backoff_s: float = 10.0,
    ) -> None:
        """``api_key`` is sent as ``Authorization: Bearer``; ``timeout`` is per attempt, in seconds;
        ``retries``, ``backoff_s`` and ``max_backoff_s``: see :class:`lit_client.calls.RetryPolicy`."""
        self.retry = RetryPolicy(retries, backoff_s, max_backoff_s)
        self._options: dict[str, Any] = {
            "base_url": base_url.rstrip("/"),
            "timeout": timeout,
            "headers": {"Authorization": f"Bearer {api_key}"} if api_key else {},
        }


class LitClient(_Api):
    """Blocking client of a LiT gateway; every failure raises :class:`lit_client.LitError`.

    >>> with LitClient("http://127.0.0.1:8000") as lit:
    ...     lit.classify(["cat.jpg"], labels=["cat", "dog"]).results[0].top.label
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http = httpx.Client(**self._options)

    def _run(self, call: Call[T]) -> T:
        attempt, outcome = 0, self._send(call)
        while (wait := self.retry.delay(call, attempt, outcome)) is not None:
            time.sleep(wait)
            attempt, outcome = attempt + 1, self._send(call)
        return call.finish(outcome)

    def _send(self, call: Call[Any]) -> Outcome:
        try:
            return self._http.request(call.method, call.path, **call.content)
        except httpx.TransportError as exc:
            return exc

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LitClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncLitClient(_Api):
    """The asyncio twin of :class:`LitClient`: the same methods, awaited.

    >>> async with AsyncLitClient("http://127.0.0.1:8000") as lit:
    ...     result = await lit.classify(["cat.jpg"], labels=["cat", "dog"])
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http = httpx.AsyncClient(**self._options)

    async def _run(self, call: Call[T]) -> T:
        attempt, outcome = 0, await self._send(call)
        while (wait := self.retry.delay(call, attempt, outcome)) is not None:
            await asyncio.sleep(wait)
            attempt, outcome = attempt + 1, await self._send(call)
        return call.finish(outcome)

    async def _send(self, call: Call[Any]) -> Outcome:
        try:
            return await self._http.request(call.method, call.path, **call.content)
        except httpx.TransportError as exc:
            return exc

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncLitClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
