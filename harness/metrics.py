"""Samples scraped from a gateway's Prometheus endpoint (``<url>/metrics``)."""

from __future__ import annotations

import re

import httpx


def metric(text_or_url: str, name: str) -> float:
    """A metric's value from Prometheus text (or from ``<url>/metrics``), summed over the samples whose labels
    include those written in ``name``; 0 when there is none. ``'lit_images_total'`` is every model's images,
    ``'lit_batch_size_count{encoder="image"}'`` every model's image batches."""
    text = httpx.get(f"{text_or_url}/metrics").text if text_or_url.startswith("http") else text_or_url
    base, _, labels = name.partition("{")
    samples = {}
    for line in text.splitlines():
        if line.startswith(base) and not line.startswith("#"):
            sample, _, value = line.rpartition(" ")
            samples[sample] = float(value)
    wanted = dict(re.findall(r'(\w+)="([^"]*)"', labels))
    return summed(samples, base, **wanted)


def prometheus(url: str) -> dict[str, float]:
    """Every sample of ``<url>/metrics`` as ``{'name{labels}': value}``."""
    samples = {}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def summed(samples: dict[str, float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples (from :func:`prometheus`) whose labels include ``labels``: e.g. every
    model's ``lit_batch_size_count`` with ``encoder="image"``."""
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    total = 0.0
    for sample, value in samples.items():
        base, _, rest = sample.partition("{")
        if base == name and all(label in rest for label in wanted):
            total += value
    return total
