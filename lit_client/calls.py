"""What each /v1 call sends and how its answer is read, and when a call is retried: everything the sync and
async clients share (they only differ in how they send and how they wait)."""

from __future__ import annotations

import email.utils
import mimetypes
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Generic, TypeVar, cast
from urllib.parse import quote

import httpx

from lit_client.results import (
    ClassifyResult,
    Embeddings,
    LabelSet,
    LabelSetSummary,
    LitError,
    ModelInfo,
    Models,
    decode,
)

T = TypeVar("T")

# An image: a path, its bytes, or a binary file object (read once, when the call is made).
Image = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]
# What one attempt got: an answer, or none.
Outcome = httpx.Response | httpx.TransportError
RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API call: the request (``content`` holds httpx's ``json``/``data``/``files`` arguments) and how
    to read the answer. ``idempotent`` calls may be sent again after a connection broke mid-request."""

    method: str
    path: str
    result: Callable[[Any], T]
    content: dict[str, Any] = field(default_factory=dict)
    idempotent: bool = True

    def finish(self, outcome: Outcome) -> T:
        """The result of a 2xx answer; raise :class:`LitError` for anything else."""
        if isinstance(outcome, httpx.TransportError):
            code = "timeout" if isinstance(outcome, httpx.TimeoutException) else "connection_error"
            try:
                where = str(outcome.request.url)
            except RuntimeError:  # httpx sets it on every error of a request it sent
                where = self.path
            raise LitError(
                None, code, f"{self.method} {where}: {type(outcome).__name__}: {outcome}"
            ) from outcome
        if outcome.is_success:
            return self.result(outcome.json() if outcome.content else None)
        raise error_from(outcome)


def error_from(response: httpx.Response) -> LitError:
    """The gateway's ``{"error": {"code", "message"}}``; another body (a proxy's page): ``http_<status>``."""
    request_id = response.headers.get("x-request-id")
    try:
        error = response.json()["error"]
        return LitError(response.status_code, str(error["code"]), str(error["message"]), request_id)
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()[:300] or response.reason_phrase
        return LitError(response.status_code, f"http_{response.status_code}", text, request_id)


@dataclass(frozen=True)
class RetryPolicy:
    """Retry 429 and 503 answers (and a connection that failed) at most ``retries`` times.

    The wait is what ``Retry-After`` says plus up to ``backoff_s`` of jitter, else ``backoff_s * 2**n``
    (n = retries so far, with jitter) up to ``max_backoff_s``. A ``Retry-After`` longer than
    ``max_backoff_s`` ends the retries: the error is raised rather than the server asked again too soon.
    A connection that broke after the request went out is retried only for idempotent calls.
    """

    retries: int = 3
    backoff_s: float = 0.2
    max_backoff_s: float = 10.0

    def delay(self, call: Call[Any], attempt: int, outcome: Outcome) -> float | None:
        """Seconds to wait before sending ``call`` again after ``attempt`` (0-based); None: do not."""
        if attempt >= self.retries:
            return None
        if isinstance(outcome, httpx.TransportError):
            unsent = isinstance(outcome, httpx.ConnectError | httpx.ConnectTimeout)
            return self.backoff(attempt) if unsent or call.idempotent else None
        if outcome.status_code not in RETRY_STATUSES:
            return None
        wait = retry_after(outcome.headers.get("retry-after"))
        if wait is None:
            return self.backoff(attempt)
        return wait + random.uniform(0, self.backoff_s) if wait <= self.max_backoff_s else None

    def backoff(self, attempt: int) -> float:
        delay: float = min(self.max_backoff_s, self.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
        return delay


def retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def image_parts(images: Image | Iterable[Image]) -> list[tuple[str, tuple[str, bytes, str]]]:
    """Multipart ``images`` file parts; one image may be given alone."""
    single = isinstance(images, str | os.PathLike | bytes | bytearray | memoryview) or hasattr(images, "read")
    listed = [cast(Image, images)] if single else list(cast(Iterable[Image], images))
    return [("images", image_part(i, image)) for i, image in enumerate(listed)]


def image_part(index: int, image: Image) -> tuple[str, bytes, str]:
    """(file name, bytes, media type) of one image."""
    if isinstance(image, bytes | bytearray | memoryview):
        name, data = f"image-{index}", bytes(image)
    elif isinstance(image, str | os.PathLike):
        name, data = Path(image).name, Path(image).read_bytes()
    else:
        given = getattr(image, "name", None)
        name, data = Path(given).name if isinstance(given, str) else f"image-{index}", image.read()
    return name, data, mimetypes.guess_type(name)[0] or "application/octet-stream"


def result_of(kind: Any) -> Callable[[Any], Any]:
    return lambda body: decode(kind, body)


def label_set_path(name: str) -> str:
    return f"/v1/label-sets/{quote(name, safe='')}"


# --- the calls: each client method is one of these (lit_client.client) --------------------------------------


def models() -> Call[Models]:
    """Every served model (name, state, version, backend, embedding size, image size, loss kind and
    templates) and which one is the default; the default's own fields are at the top level too."""
    return Call("GET", "/v1/models", result_of(Models))


def model(name: str) -> Call[ModelInfo]:
    """One served model (``LitError`` ``unknown_model`` if the gateway serves none of that name)."""
    return Call("GET", f"/v1/models/{quote(name, safe='')}", result_of(ModelInfo))


def chosen_model(model: str | None) -> dict[str, str]:
    """The ``model`` field of a request body: absent when no model is named (the gateway's default)."""
    return {"model": model} if model is not None else {}


def classify(
    images: Image | Iterable[Image],
    labels: Iterable[str] | None = None,
    label_set: str | None = None,
    templates: Iterable[str] | None = None,
    top_k: int | None = None,
    model: str | None = None,
) -> Call[ClassifyResult]:
    """Zero-shot classification of ``images`` (paths, bytes or binary files; one or many) against
    ``labels`` or a registered ``label_set``; ``templates`` override the model's prompt templates (each with
    a ``{}``); ``top_k`` keeps the k best labels per image; ``model`` names the model to use (default: the
    gateway's default model). One result per image, in order."""
    data: dict[str, Any] = {
        "labels": list(labels or []),
        "templates": list(templates or []),
        **({"label_set": label_set} if label_set is not None else {}),
        **({"top_k": str(top_k)} if top_k is not None else {}),
        **chosen_model(model),
    }
    content = {"data": data, "files": image_parts(images)}
    return Call("POST", "/v1/classify", result_of(ClassifyResult), content)


def embed_images(images: Image | Iterable[Image], model: str | None = None) -> Call[Embeddings]:
    """L2-normalised embeddings of ``images`` (paths, bytes or binary files; one or many) by ``model``
    (default: the gateway's default model)."""
    content = {"data": chosen_model(model), "files": image_parts(images)}
    return Call("POST", "/v1/embed/image", result_of(Embeddings), content)


def embed_texts(texts: Iterable[str], model: str | None = None) -> Call[Embeddings]:
    """L2-normalised embeddings of ``texts`` (used as given: no prompt template is applied) by ``model``
    (default: the gateway's default model)."""
    body = {"texts": list(texts), **chosen_model(model)}
    return Call("POST", "/v1/embed/text", result_of(Embeddings), {"json": body})


def put_label_set(
    name: str, labels: Iterable[str], templates: Iterable[str] | None = None, model: str | None = None
) -> Call[LabelSet]:
    """Create or replace the label set ``name``. A label set belongs to no model: ``model`` (default: the
    gateway's default model) encodes its labels at once, and any other model encodes them on first use."""
    body: dict[str, Any] = {"labels": list(labels), **chosen_model(model)}
    if templates is not None:
        body["templates"] = list(templates)
    return Call("PUT", label_set_path(name), result_of(LabelSet), {"json": body})


def label_sets() -> Call[list[LabelSetSummary]]:
    """All label sets: name, label count and when each was last written."""
    return Call("GET", "/v1/label-sets", result_of(list[LabelSetSummary]))


def label_set(name: str) -> Call[LabelSet]:
    """One label set with its labels and templates."""
    return Call("GET", label_set_path(name), result_of(LabelSet))


def delete_label_set(name: str) -> Call[None]:
    """Delete a label set (``LitError`` ``unknown_label_set`` if there is none of that name)."""
    # Not resent after a broken connection: a delete that did arrive would then answer 404.
    return Call("DELETE", label_set_path(name), lambda body: None, idempotent=False)
