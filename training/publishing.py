"""Publish staged encoder folders as the next version of a bundle: hashes, manifest last, renames, fsyncs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lit_bundle import atomic
from lit_bundle.layout import MANIFEST_FILE, triton_model
from lit_bundle.manifest import Manifest, referenced_files, sha256_file
from lit_bundle.repository import next_version, publish
from training.onnx_graphs import ExportError


def publish_version(
    repository: Path,
    name: str,
    manifest_for: Callable[[int], Manifest],
    staged_image: Path,
    staged_text: Path,
) -> Manifest:
    """Publish the staged folders as the next free version, ``manifest_for(version)`` describing them
    (its files are found in the staged folders by name and hashed); retries when another exporter takes
    the version number first."""
    image_prefix = f"{triton_model(name, 'image')}/"
    for _ in range(10):
        manifest = manifest_for(next_version(repository, name))
        staged = {
            rel: (staged_image if rel.startswith(image_prefix) else staged_text) / Path(rel).name
            for rel in referenced_files(manifest)
        }
        manifest = manifest.model_copy(update={"files": {rel: sha256_file(p) for rel, p in staged.items()}})
        atomic.write_atomic(staged_image / MANIFEST_FILE, manifest.model_dump_json(indent=1))
        atomic.fsync_tree(staged_text)  # on disk before the renames that make the version visible
        atomic.fsync_tree(staged_image)
        try:
            published = publish(repository, manifest, staged_image, staged_text)
        except FileExistsError:
            continue  # another exporter took this version number: take the next one
        atomic.fsync_dir(staged_text.parent)  # the renames themselves survive a power cut
        atomic.fsync_dir(staged_image.parent)
        return published
    raise ExportError(f"could not find a free version number for {name} in {repository}")
