"""Prompts: the one definition, shared by training and serving, of what a template is and how labels become
prompts and prompts become one embedding per label.

A template is a sentence with exactly one ``{}`` where the label goes and no other braces, e.g.
``"a bad photo of a {}."``. Labels go in with ``str.replace``, never ``str.format``: labels and templates
come from clients, and ``format`` would interpret other braces (``"{0.__class__}"``) in them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PLACEHOLDER = "{}"


class TemplateError(ValueError):
    """A template without exactly one ``{}``, or with stray braces."""


def template_problem(template: str) -> str | None:
    """Why ``template`` is not a valid template, or None."""
    if not isinstance(template, str) or not template.strip():
        return "a template must be a non-empty string"
    stray = template.replace(PLACEHOLDER, "")
    if template.count(PLACEHOLDER) != 1 or "{" in stray or "}" in stray:
        return (
            f"a template needs exactly one {PLACEHOLDER} where the label goes and no other braces, "
            f"got {template!r}"
        )
    return None


def check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    """``templates`` as a tuple, or :class:`TemplateError` naming the first bad one."""
    if not templates:
        raise TemplateError("give at least one template, e.g. 'a photo of a {}.'")
    for index, template in enumerate(templates):
        problem = template_problem(template)
        if problem is not None:
            raise TemplateError(f"template {index}: {problem}")
    return tuple(templates)


def expand_prompts(labels: Sequence[str], templates: Sequence[str]) -> list[str]:
    """One prompt per (label, template), label-major: all templates of label 0, then label 1, ..."""
    check_templates(templates)
    return [template.replace(PLACEHOLDER, label) for label in labels for template in templates]


def _normalise(x: np.ndarray, axis: int = -1) -> np.ndarray:
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    normalised: np.ndarray = x / np.maximum(norm, np.finfo(np.float32).tiny)
    return normalised


def ensemble(prompt_embeddings: np.ndarray, labels_count: int, templates_count: int) -> np.ndarray:
    """CLIP/LiT prompt ensembling: per label, the mean of its L2-normalised prompt embeddings, normalised.

    Rows are label-major, as :func:`expand_prompts` makes them; they are normalised again here so the mean
    is over unit vectors even if an encoder's output was not exactly unit length. Returns float32
    ``(labels_count, dim)``.
    """
    x = np.asarray(prompt_embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != labels_count * templates_count:
        raise ValueError(
            f"expected {labels_count * templates_count} rows ({labels_count} labels x {templates_count} "
            f"templates) of a 2-D array, got shape {x.shape}"
        )
    grouped = _normalise(x).reshape(labels_count, templates_count, x.shape[1])
    return _normalise(grouped.mean(axis=1)).astype(np.float32, copy=False)
