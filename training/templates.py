"""Prompt templates for zero-shot classification, stored as data files.

What a template is, and how labels fill it, is :mod:`lit_bundle.prompts`.
Built-in sets live in ``training/data/templates/<name>.txt``, one template per line; blank lines and lines
starting with ``#`` are ignored. The built-ins are CLIP's 80 ImageNet templates (``imagenet80``), the
7-template subset CLIP found by forward selection (``imagenet7``) and a small set for the synthetic demo
world (``demo``).
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from lit_bundle.prompts import TemplateError, template_problem


def _builtin_dir() -> Traversable:
    return resources.files("training").joinpath("data", "templates")


def builtin_names() -> list[str]:
    """Names of the template sets shipped with the package, sorted."""
    folder = _builtin_dir()
    return sorted(p.name.removesuffix(".txt") for p in folder.iterdir() if p.name.endswith(".txt"))


def parse_templates(text: str, source: str) -> list[str]:
    """Parse one template per line; ``source`` names the file in error messages."""
    templates: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        problem = template_problem(line)
        if problem is not None:
            raise TemplateError(f"{source}, line {lineno}: {problem}")
        templates.append(line)
    if not templates:
        raise ValueError(f"{source}: no templates found")
    return templates


def load_templates(name_or_path: str | Path) -> list[str]:
    """Load a built-in template set by name (``imagenet80``, ``imagenet7``, ``demo``) or a text file."""
    name = str(name_or_path)
    known = builtin_names()
    if name in known:
        resource = _builtin_dir().joinpath(f"{name}.txt")
        return parse_templates(resource.read_text(encoding="utf-8"), f"built-in templates {name!r}")
    path = Path(name).expanduser()
    if path.is_file():
        return parse_templates(path.read_text(encoding="utf-8"), str(path))
    raise ValueError(
        f"unknown template set {name!r}: not a file, and not one of the built-in sets {', '.join(known)}"
    )
