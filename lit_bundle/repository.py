"""Bundle versions inside a Triton model repository: list, publish, promote, prune, load.

The *active* version of a bundle is the one both encoders' ``config.pbtxt`` serve (their ``specific``
version policy), so Triton and the embedded gateway always agree on it. A version becomes visible
only once complete: the text encoder's folder is renamed into place first, then the image encoder's
folder, which holds the manifest.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from lit_bundle.layout import (
    CONFIG_FILE,
    ENCODERS,
    MANIFEST_FILE,
    Encoder,
    bundle_of,
    config_path,
    encoder_root,
    manifest_path,
    triton_model,
    version_dir,
)
from lit_bundle.manifest import BundleError, EncoderSpec, Manifest, read_manifest, verify_files
from lit_bundle.triton import TritonOptions, active_versions, bundle_configs, promoted_config, write_config
from lit_bundle.triton_files import check_served_file


@dataclass(frozen=True)
class Bundle:
    repository: Path
    manifest: Manifest

    def path(self, relative: str) -> Path:
        return self.repository / relative

    @property
    def image_model(self) -> Path:
        return self.path(self.manifest.image_encoder.file)

    @property
    def text_model(self) -> Path:
        return self.path(self.manifest.text_encoder.file)

    @property
    def tokenizer(self) -> Path:
        return self.path(self.manifest.text.tokenizer)

    def load_tokenizer(self) -> Tokenizer:
        """The tokenizer, padding as the text encoder takes it: to the longest text of each batch when the
        encoder's sequence axis is dynamic (a third of the work of 77 positions for a typical prompt),
        else to the fixed context length ``tokenizer.json`` was saved with. Truncation stays at the
        context length either way."""
        tokenizer = Tokenizer.from_file(str(self.tokenizer))
        padding = tokenizer.padding
        if padding is not None and self.manifest.text_encoder.inputs[0].shape[-1] == -1:
            keep = ("direction", "pad_id", "pad_type_id", "pad_token", "pad_to_multiple_of")
            tokenizer.enable_padding(**{key: padding[key] for key in keep}, length=None)
        return tokenizer


def bundle_names(repository: Path) -> list[str]:
    """Names of the bundles in ``repository`` (folders ``<name>_image`` holding a manifest)."""
    repository = Path(repository)
    if not repository.is_dir():
        return []
    return sorted(
        bundle_of(folder.name)
        for folder in repository.glob(f"*_{ENCODERS[0]}")  # the image encoder's folder holds the manifests
        if any((v / MANIFEST_FILE).is_file() for v in folder.iterdir() if v.name.isdigit())
    )


def versions(repository: Path, name: str) -> list[int]:
    """Complete versions of bundle ``name`` (a manifest is present), in ascending order."""
    folder = encoder_root(repository, name, "image")
    if not folder.is_dir():
        return []
    return sorted(int(v.name) for v in folder.iterdir() if v.name.isdigit() and (v / MANIFEST_FILE).is_file())


def _occupied_versions(repository: Path, name: str) -> set[int]:
    found: set[int] = set()
    for encoder in ENCODERS:
        folder = encoder_root(repository, name, encoder)
        if folder.is_dir():
            found |= {int(v.name) for v in folder.iterdir() if v.name.isdigit()}
    return found


def active_version(repository: Path, name: str) -> int | None:
    config = config_path(repository, name)
    if not config.is_file():
        return None
    served = active_versions(config.read_text())
    return max(served) if served else None


def resolve_bundle(repository: Path, name: str | None = None) -> str:
    names = bundle_names(repository)
    if name is not None:
        if name not in names:
            raise BundleError(
                f"no bundle named {name!r} in {repository} (found: {', '.join(names) or 'none'}): "
                "check the name, or export/import one there first"
            )
        return name
    if len(names) != 1:
        raise BundleError(
            f"{repository} holds {len(names)} bundles ({', '.join(names) or 'none'}): "
            + ("export or import a model first" if not names else "name the one to use")
        )
    return names[0]


def load_bundle(repository: Path, name: str | None = None, version: int | None = None) -> Bundle:
    """The (active, by default) version of a bundle, with every file checked against its sha256."""
    repository = Path(repository)
    name = resolve_bundle(repository, name)
    if version is None:
        version = active_version(repository, name)
        if version is None:
            raise BundleError(
                f"{config_path(repository, name)} names no active version: "
                f"run `lit-train promote {name} <version> -r {repository}`"
            )
    manifest = read_manifest(manifest_path(repository, name, version))
    if (manifest.name, manifest.version) != (name, version):
        raise BundleError(
            f"{manifest_path(repository, name, version)} describes {manifest.name} v{manifest.version}, "
            f"not {name} v{version}: the folder was renamed or copied by hand; re-export instead"
        )
    verify_files(manifest, repository)
    return Bundle(repository, manifest)


def publish(repository: Path, manifest: Manifest, staged_image: Path, staged_text: Path) -> Manifest:
    """Move two staged encoder folders into place as version ``manifest.version``.

    The caller staged them inside ``<name>_image`` and ``<name>_text`` (same file system) with the
    manifest already written into ``staged_image``. Fails if that version exists.
    """
    repository = Path(repository)
    image_dir = version_dir(repository, manifest.name, "image", manifest.version)
    text_dir = version_dir(repository, manifest.name, "text", manifest.version)
    if image_dir.exists() or text_dir.exists():
        raise FileExistsError(f"version {manifest.version} of {manifest.name} already exists")
    os.rename(staged_text, text_dir)
    os.rename(staged_image, image_dir)  # the manifest appears last: the version is now complete
    return manifest


def next_version(repository: Path, name: str) -> int:
    return max(_occupied_versions(repository, name), default=0) + 1


def promote(repository: Path, name: str, version: int, options: TritonOptions | None = None) -> None:
    """Make ``version`` the one Triton and the gateway serve, by rewriting both ``config.pbtxt``.

    Without ``options`` an existing config keeps every operator setting (instances, batching,
    optimization, warm-up, comments...): only its version policy changes, and the tensors when this
    version's differ (:func:`lit_bundle.triton.promoted_config`, which needs ``tritonclient``); a missing
    config is generated from the default options. ``options`` regenerates both configs from them.
    ``BundleError`` when a config (kept or generated) makes Triton load a variant this version lacks.
    """
    repository = Path(repository)
    manifest = load_bundle(repository, name, version).manifest
    generated = bundle_configs(manifest, [version], options or TritonOptions())
    texts: dict[Path, str] = {}
    encoders: tuple[tuple[EncoderSpec, Encoder], ...] = (
        (manifest.image_encoder, "image"),
        (manifest.text_encoder, "text"),
    )
    for encoder, kind in encoders:
        path = config_path(repository, name, kind)
        if options is not None or not path.is_file():
            texts[path] = generated[encoder.triton_name]
        else:
            texts[path] = _kept(path, encoder, version, manifest.text.context_length)
        check_served_file(texts[path], manifest, kind)
    for path, text in texts.items():  # written only once both are ready: never one promoted alone
        write_config(path, text)


def _kept(path: Path, encoder: EncoderSpec, version: int, context_length: int) -> str:
    """The config at ``path`` with its operator settings kept, made to serve ``version`` of ``encoder``."""
    try:
        return promoted_config(path.read_text(), encoder, [version], context_length)
    except ImportError:
        raise BundleError(
            f"keeping the operator settings of {path} needs Triton's protobuf: "
            'pip install "tritonclient[grpc]" (or pass explicit Triton options to regenerate it)'
        ) from None
    except ValueError as exc:
        raise BundleError(f"{path}: {exc}") from None


def write_missing_configs(repository: Path, manifest: Manifest, options: TritonOptions | None = None) -> None:
    """Give a bundle whose configs are missing ones serving ``manifest``'s version; existing configs (and so
    the active version) stay as they are. ``BundleError`` when ``options`` name a variant it lacks."""
    generated = bundle_configs(manifest, [manifest.version], options or TritonOptions())
    missing: dict[Path, str] = {}
    for kind in ENCODERS:
        model = triton_model(manifest.name, kind)
        path = Path(repository) / model / CONFIG_FILE
        if not path.exists():
            missing[path] = generated[model]
            check_served_file(missing[path], manifest, kind)
    for path, text in missing.items():
        write_config(path, text)


def prune(repository: Path, name: str, keep: int = 1) -> list[int]:
    """Delete all but the newest ``keep`` versions, never the active one; returns what was removed."""
    active = active_version(repository, name)
    existing = sorted(_occupied_versions(repository, name))
    kept = set(existing[-keep:]) if keep > 0 else set()
    removed = [v for v in existing if v not in kept and v != active]
    for version in removed:
        # Image folder (with the manifest) first, so a half-pruned version is never seen as complete.
        for encoder in ENCODERS:
            shutil.rmtree(version_dir(repository, name, encoder, version), ignore_errors=True)
    return removed
