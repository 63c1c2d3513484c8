"""Lower-precision variants for a bundle already in a repository (imported models, older exports).

Versions never change once published, so the variants come as a new version: the source version's files,
copied, plus the variants that passed their gate. The gate runs on a labelled set the caller names, or on
the synthetic world's evaluation split when the bundle was trained on it; calibration uses the images the
caller gives, or the bundle's training data when its provenance names it.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from lit_bundle import atomic
from lit_bundle.layout import MANIFEST_FILE, encoder_root, triton_model
from lit_bundle.manifest import Manifest, VariantPrecision
from lit_bundle.repository import active_version, load_bundle, promote, write_missing_configs
from training.config import TrainConfig
from training.data.labelled import LabelledSet
from training.export import STAGING_PREFIX
from training.publishing import publish_version
from training.sources import world_for
from training.variant_data import labelled_gate_set, synthetic_gate_set, variant_request
from training.variants import VariantError, build_variants


def training_config(manifest: Manifest) -> TrainConfig | None:
    """The training config an exported checkpoint recorded in its provenance (None for imported models)."""
    recorded = manifest.provenance.get("config")
    return TrainConfig.model_validate_json(recorded) if recorded else None


def _moved(manifest: Manifest, version: int) -> Manifest:
    """``manifest`` describing the same files under ``version``'s folders."""

    def move(relative: str) -> str:
        for encoder in ("image", "text"):
            prefix = f"{triton_model(manifest.name, encoder)}/{manifest.version}/"
            if relative.startswith(prefix):
                return f"{triton_model(manifest.name, encoder)}/{version}/{relative.removeprefix(prefix)}"
        raise VariantError(f"{relative} is outside the folders of {manifest.name} v{manifest.version}")

    return manifest.model_copy(
        update={
            "version": version,
            "image_encoder": manifest.image_encoder.model_copy(
                update={"file": move(manifest.image_encoder.file)}
            ),
            "text_encoder": manifest.text_encoder.model_copy(
                update={"file": move(manifest.text_encoder.file)}
            ),
            "text": manifest.text.model_copy(update={"tokenizer": move(manifest.text.tokenizer)}),
            "variants": tuple(
                v.model_copy(update={"image_file": move(v.image_file), "text_file": move(v.text_file)})
                for v in manifest.variants
            ),
        }
    )


def add_variants(
    repository: Path,
    precisions: Sequence[VariantPrecision],
    name: str | None = None,
    version: int | None = None,
    eval_set: Path | None = None,
    classes: Path | None = None,
    calibration: Path | None = None,
    activate: bool | None = None,
) -> Manifest:
    """Publish ``name`` v``version`` (default: the active one) again as a new version with ``precisions``
    added; VariantError when none passes its gate (then nothing is published). ``activate`` (default:
    when the source version is the active one) promotes the new version."""
    repository = Path(repository)
    source = load_bundle(repository, name, version)
    m = source.manifest
    if m.provenance.get("precision", "fp32") != "fp32":
        raise VariantError(
            f"{m.name} v{m.version} is {m.provenance['precision']}: variants are made from fp32"
        )
    cfg = training_config(m)
    if eval_set is not None:
        gate = labelled_gate_set(LabelledSet.read(eval_set, classes), m.templates)
    elif cfg is not None and cfg.data.kind == "synthetic":
        gate = synthetic_gate_set(world_for(cfg.data), cfg.data.synthetic.eval_size, m.templates)
    else:
        gate = None
    request = variant_request(precisions, gate, cfg, calibration)
    assert request is not None  # precisions is not empty: variant_request refuses otherwise
    image_root, text_root = (
        encoder_root(repository, m.name, "image"),
        encoder_root(repository, m.name, "text"),
    )
    with (
        atomic.staging_dir(image_root, m.name, prefix=STAGING_PREFIX) as staged_image,
        atomic.staging_dir(text_root, m.name, prefix=STAGING_PREFIX) as staged_text,
    ):
        for folder, staged in (
            (source.image_model.parent, staged_image),
            (source.text_model.parent, staged_text),
        ):
            for file in folder.iterdir():
                if file.is_file() and file.name != MANIFEST_FILE:
                    shutil.copy2(file, staged / file.name)
        outcome = build_variants(request, staged_image, staged_text, m.preprocess, source.load_tokenizer())
        if not outcome.built:
            raise VariantError("no variant passed its gate, nothing published:\n" + "\n".join(outcome.log))

        def manifest_for(new_version: int) -> Manifest:
            moved = _moved(m, new_version)
            built = {v.precision for v in outcome.built}
            kept = [v for v in moved.variants if v.precision not in built]
            added = [v.entry(m.name, new_version) for v in outcome.built]
            provenance = {**m.provenance, **outcome.rejected, "variants_added_to": f"v{m.version}"}
            return moved.model_copy(update={"variants": (*kept, *added), "provenance": provenance})

        published = publish_version(repository, m.name, manifest_for, staged_image, staged_text)
    if activate or (activate is None and active_version(repository, m.name) == m.version):
        promote(repository, m.name, published.version)
    else:
        write_missing_configs(repository, published, None)
    return published
