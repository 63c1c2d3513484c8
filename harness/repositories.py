"""Model repositories for tests that serve several models: copies of the committed one, with extra bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from harness.gateway import REPOSITORY


def copy_bundle(repository: Path, source: str, name: str) -> None:
    """Add bundle ``name`` to ``repository``: ``source``'s files under another name (so the same scores;
    answers tell the two apart by the model they name). Checksums hold: only the configs and manifests,
    which are not checksummed, change."""
    for encoder in ("image", "text"):
        shutil.copytree(repository / f"{source}_{encoder}", repository / f"{name}_{encoder}")
    renamed = [repository / f"{name}_{encoder}" / "config.pbtxt" for encoder in ("image", "text")]
    renamed += (repository / f"{name}_image").glob("*/manifest.json")
    for path in renamed:
        path.write_text(path.read_text().replace(source, name))


def two_model_repository(folder: Path) -> Path:
    """A copy of the committed repository with a second bundle, ``lit_other``, the demo model renamed."""
    repository = folder / "model_repository"
    shutil.copytree(REPOSITORY, repository)
    copy_bundle(repository, "lit_demo", "lit_other")
    return repository


# A gateway over :func:`two_model_repository` that also names a model that cannot load.
PAIR = ["lit_demo", "lit_other", "lit_missing"]


def pair_environment(folder: Path) -> dict[str, str]:
    """Gateway settings serving lit_demo and lit_other (the default) and naming lit_missing, which fails
    to load: a repository for it is made under ``folder``."""
    return {
        "LIT_REPOSITORY": str(two_model_repository(folder)),
        "LIT_MODELS": json.dumps(PAIR),
        "LIT_DEFAULT_MODEL": "lit_other",
    }


def int8_repository(folder: Path) -> Path:
    """A copy of the committed repository in which lit_demo v2 (active) is v1 plus an int8 variant, made
    and gated by ``add_variants``: calibrated on the demo's training data, gated on 2,048 images of the
    second renderer (32 per class; on the world's own cluttered evaluation split int8 agrees with fp32 on
    98.9-99.0% of the top-1 answers, under the gate's 99.5%)."""
    from training.add_variants import add_variants
    from training.data.second_renderer import write_set

    repository = folder / "model_repository"
    shutil.copytree(REPOSITORY, repository)
    write_set(folder / "gate-images", per_class=32, seed=0)
    add_variants(repository, ["int8"], "lit_demo", eval_set=folder / "gate-images")
    return repository
