"""What a load sends: pre-built classify requests over a few distinct images, and each image's answer.

Each image's answer is taken from a single request to the idle gateway; under load every response must
give each of its images that image's answer (the same labels, the same top label, every score within
``SCORE_TOLERANCE``), so a response that carried another request's image is caught.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from harness.images import LABELS, distinct_images

LABEL_SET = "load"
SCORE_TOLERANCE = 1e-4

Answer = dict[str, float]  # label -> score, for one image


@dataclass(frozen=True)
class Sample:
    """One request the clients send: which images it carries (indices into the image list), in order."""

    images: tuple[int, ...]
    request: bytes  # the whole HTTP/1.1 request


@dataclass(frozen=True)
class Workload:
    labels: list[str]
    blobs: list[bytes]  # the distinct images
    answers: list[Answer]  # each image's answer on the idle gateway
    samples: list[Sample]  # the requests to send


def target(url: str) -> tuple[str, int]:
    """Host and port of ``url``, which must be on 127.0.0.1 (these loads never leave the machine)."""
    host, _, port = url.removeprefix("http://").rstrip("/").partition(":")
    if host != "127.0.0.1":
        raise ValueError(f"{url}: load drills only target 127.0.0.1")
    return host, int(port)


def http_request(host: str, port: int, path: str, body: bytes) -> bytes:
    """A whole HTTP/1.1 ``POST`` of the JSON ``body`` to ``path``, ready to write on a connection."""
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def classify_samples(url: str, blobs: Sequence[bytes], label_set: str, labels: Sequence[str]) -> list[Sample]:
    """Every image alone against the label set and against the same labels sent inline, and every
    neighbouring pair of images in one request (so that result order within a request is checked)."""
    host, port = target(url)
    encoded = [base64.b64encode(b).decode() for b in blobs]
    groups: list[tuple[tuple[int, ...], dict[str, Any]]] = []
    for i in range(len(blobs)):
        pair = (i, (i + 1) % len(blobs))
        groups += [((i,), {"label_set": label_set}), ((i,), {"labels": list(labels)})]
        groups.append((pair, {"label_set": label_set}))
    samples = []
    for images, choice in groups:
        body = json.dumps({"images": [encoded[i] for i in images], **choice}).encode()
        samples.append(Sample(images, http_request(host, port, "/v1/classify", body)))
    return samples


def reference_answers(url: str, blobs: Sequence[bytes], label_set: str) -> list[Answer]:
    """Each image's answer from a single request to an otherwise idle gateway."""
    answers = []
    for blob in blobs:
        body = {"images": [base64.b64encode(blob).decode()], "label_set": label_set}
        response = httpx.post(f"{url}/v1/classify", json=body, timeout=30)
        response.raise_for_status()
        answers.append({p["label"]: p["score"] for p in response.json()["results"][0]["predictions"]})
    return answers


def prepare(url: str, images: int = 8) -> Workload:
    """Register the label set, render ``images`` images, take their answers from the idle gateway, and
    build the requests. The images' top labels must all differ."""
    httpx.put(f"{url}/v1/label-sets/{LABEL_SET}", json={"labels": LABELS}, timeout=60).raise_for_status()
    blobs = distinct_images(images, LABELS)
    answers = reference_answers(url, blobs, LABEL_SET)
    tops = [max(a, key=a.__getitem__) for a in answers]
    if len(set(tops)) != len(tops):
        raise RuntimeError(f"the images' top labels are not all different: {tops}")
    return Workload(list(LABELS), blobs, answers, classify_samples(url, blobs, LABEL_SET, LABELS))


def is_wrong(body: bytes, images: Sequence[int], answers: Sequence[Answer]) -> bool:
    """Whether a 200 response fails to give each of ``images`` its own answer."""
    try:
        results = json.loads(body)["results"]
    except (ValueError, KeyError):
        return True
    if len(results) != len(images):
        return True
    for result, image in zip(results, images, strict=True):
        want = answers[image]
        got = {p["label"]: p["score"] for p in result["predictions"]}
        if got.keys() != want.keys() or result["predictions"][0]["label"] != max(want, key=want.__getitem__):
            return True
        if any(abs(got[label] - score) > SCORE_TOLERANCE for label, score in want.items()):
            return True
    return False
