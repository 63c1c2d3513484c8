"""``lit-train retrain``: the dry run end to end, a run below the gate, the gate's rules, the CI workflow."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from lit_bundle.repository import CONFIG_FILE, active_version, load_bundle, versions
from training.cli import app
from training.retrain import DRY_RUN_CONFIG, GateData, RetrainOptions, gate_checks

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = ROOT / "model_repository"
WORKFLOW = ROOT / ".github" / "workflows" / "retrain.yml"
DRY_NAME = "lit_demo_dryrun"
# A much weaker model than the dry run's: a few steps of tower pretraining and of LiT tuning.
WEAK = ["pretrain.steps=5", "pretrain.train_size=256", "steps=5", "data.synthetic.train_size=512"]


def tree_state(root: Path) -> dict[str, tuple[str, int] | None]:
    """Every path under ``root``: sha256 and mtime of files, None for folders."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        if p.is_file()
        else None
        for p in sorted(root.rglob("*"))
    }


def flat(output: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(output.split())


def report(folder: Path) -> dict:
    return json.loads((folder / "retrain.json").read_text())


@dataclass
class DryRun:
    exit_code: int
    output: str
    out: Path
    reports: Path
    real_before: dict
    real_after: dict


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> DryRun:
    """One dry run through the CLI, shared by the tests (about 40 s on 2 cores)."""
    base = tmp_path_factory.mktemp("retrain")
    before = tree_state(REPOSITORY)
    args = ["retrain", "--dry-run", "--quiet", "--repository", str(REPOSITORY), "--name", "lit_demo"]
    result = CliRunner().invoke(
        app, [*args, "--out", str(base / "run"), "--report-dir", str(base / "reports")]
    )
    return DryRun(
        result.exit_code, result.output, base / "run", base / "reports", before, tree_state(REPOSITORY)
    )


def test_dry_run_promotes_a_new_version_in_a_temporary_copy(dry_run: DryRun) -> None:
    assert dry_run.exit_code == 0, dry_run.output
    assert f"{DRY_NAME} v1 is now active" in flat(dry_run.output)
    assert dry_run.real_after == dry_run.real_before, "the dry run touched the real model_repository/"

    copy = dry_run.out / "repository"
    assert active_version(copy, DRY_NAME) == 1
    bundle = load_bundle(copy, DRY_NAME)  # every file checked against its sha256
    assert bundle.manifest.metrics["gate_heldout_top1"] >= 0.8
    # the rest of the copy is the real repository, unchanged
    assert active_version(copy, "lit_demo") == active_version(REPOSITORY, "lit_demo")
    for path in (REPOSITORY / "lit_demo_image").rglob("*"):
        if path.is_file():
            assert (copy / path.relative_to(REPOSITORY)).read_bytes() == path.read_bytes()

    data = report(dry_run.reports)
    assert data["passed"] is True and data["decision"] == "promoted" and data["dry_run"] is True
    assert [c["passed"] for c in data["checks"]] == [True, True]
    assert data["previous_version"] is None and data["new_version"] == data["active_version"] == 1
    assert data["published_identical_to_gated"] is True
    assert data["options"]["name"] == "lit_demo" and data["options"]["dry_run"] is True  # what was asked
    # the ONNX bundle scores what torch scored on the same held-out images
    assert math.isclose(
        data["candidate"]["heldout_top1"], data["training_metrics"]["heldout_top1"], abs_tol=0.01
    )
    assert set(data["timings"]) >= {"pretrain_tower", "train", "export_candidate", "gate", "publish", "total"}
    markdown = (dry_run.reports / "retrain.md").read_text()
    assert "gate passed, v1 promoted" in markdown and "| min_accuracy | pass |" in markdown


@pytest.mark.parametrize("case", ["regression", "floor"])
def test_a_run_below_the_gate_exits_non_zero_and_promotes_nothing(
    dry_run: DryRun, tmp_path: Path, case: str
) -> None:
    """A real (not dry) run: below the active version (regression) or below --min-accuracy on a new bundle."""
    assert dry_run.exit_code == 0, dry_run.output
    repository = tmp_path / "repository"
    if case == "regression":  # the dry run's repository: lit_demo_dryrun v1 is active
        shutil.copytree(dry_run.out / "repository", repository)
        gate = ["--min-accuracy", "0"]
    else:  # an empty repository: a first version must not become active either
        repository.mkdir()
        gate = ["--min-accuracy", "1.01"]
    before = tree_state(repository)
    configs = [(repository / f"{DRY_NAME}{s}" / CONFIG_FILE) for s in ("_image", "_text")]
    config_text = [c.read_text() if c.exists() else None for c in configs]

    result = CliRunner().invoke(
        app,
        [
            "retrain", "-c", str(DRY_RUN_CONFIG), "--repository", str(repository), "--name", DRY_NAME,
            "--out", str(tmp_path / "run"), "--quiet", *gate, *WEAK, f"cache_dir={tmp_path / 'cache'}",
        ],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "gate failed: nothing promoted" in flat(result.output)
    assert tree_state(repository) == before, "a failed gate wrote into the repository"
    assert [c.read_text() if c.exists() else None for c in configs] == config_text

    data = report(tmp_path / "run" / "report")
    assert data["passed"] is False and data["decision"] == "rejected" and data["new_version"] is None
    failed = [c for c in data["checks"] if not c["passed"]]
    if case == "regression":
        assert active_version(repository, DRY_NAME) == 1 and versions(repository, DRY_NAME) == [1]
        assert data["previous_version"] == data["active_version"] == 1
        assert [c["name"] for c in failed] == ["regression"]
        assert "active v1" in failed[0]["detail"] and "more than the allowed" in failed[0]["detail"]
        assert data["candidate"]["heldout_top1"] < data["previous"]["heldout_top1"] - 0.01
    else:
        assert active_version(repository, DRY_NAME) is None and versions(repository, DRY_NAME) == []
        assert [c["name"] for c in failed] == ["min_accuracy"]
        assert "is below the minimum 1.0100" in failed[0]["detail"]
    assert "gate FAILED, nothing promoted" in (tmp_path / "run" / "report" / "retrain.md").read_text()
    # the rejected candidate stays in the run folder for inspection
    assert load_bundle(tmp_path / "run" / "candidate", DRY_NAME).manifest.version == 1


def test_gate_rules() -> None:
    def failed(*args) -> list[str]:
        return [c.name for c in gate_checks(*args) if not c.passed]

    assert failed(0.80, 0.80, 0.01) == []  # the floor itself passes; nothing active to compare with
    assert failed(0.79, 0.80, 0.01) == ["min_accuracy"]
    assert failed(0.89, 0.80, 0.01, 0.90, 3) == []  # a drop of exactly max_regression passes
    assert failed(0.88, 0.80, 0.01, 0.90, 3) == ["regression"]
    assert failed(0.95, 0.80, 0.0, 0.90, 3) == []  # a gain always passes
    assert failed(0.70, 0.80, 0.01, 0.90, 3) == ["min_accuracy", "regression"]
    assert failed(float("nan"), 0.0, 1.0, 0.5, 1) == ["min_accuracy", "regression"]


def test_the_cli_builds_one_options_object(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import training.retrain

    seen: list[RetrainOptions] = []

    def fake_retrain(options: RetrainOptions, *, triton: object = None) -> None:
        seen.append(options)
        raise ValueError("stopped before training")

    monkeypatch.setattr(training.retrain, "retrain", fake_retrain)
    args = ["retrain", "--dry-run", "-q", "-r", str(tmp_path), "--name", "mine", "--eval-set", "ev"]
    flags = ["--gate-metric", "top5", "--min-accuracy", "0.5", "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, [*args, *flags, "steps=3", "pretrain.steps=2"])
    assert result.exit_code == 2 and "stopped before training" in result.output, result.output
    assert seen == [
        RetrainOptions(
            repository=tmp_path,
            name="mine",
            overrides=("steps=3", "pretrain.steps=2"),
            gate=GateData(eval_set="ev", metric="top5"),
            min_accuracy=0.5,
            out=tmp_path / "o",
            dry_run=True,
            progress=False,
        )
    ]
    assert seen[0].config_file == DRY_RUN_CONFIG and seen[0].max_regression == 0.01


def test_refuses_a_used_run_folder_and_a_missing_tower_on_own_data(tmp_path: Path) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "old.txt").write_text("x")
    base = ["retrain", "--repository", str(tmp_path / "repository"), "--quiet"]
    used = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "used")])
    assert used.exit_code == 2 and "is not empty" in flat(used.output)
    weights = f"model.image.weights={tmp_path / 'none.safetensors'}"
    manifest = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "new"), "data.kind=manifest", weights])
    assert manifest.exit_code == 2  # no tower pretraining on the synthetic world for a model of your data
    assert "give model.image.weights a pretrained tower file" in flat(manifest.output)
    assert not (tmp_path / "repository").exists()


def test_workflow_runs_the_cli_command_with_options_it_has() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as True
    assert {"workflow_dispatch", "schedule"} <= set(triggers)
    inputs = set(triggers["workflow_dispatch"]["inputs"])
    assert {"min_accuracy", "max_regression", "dry_run"} <= inputs
    # your own data: the training data and the gate's evaluation data are inputs of the workflow
    assert {"bundle", "config", "data", "eval_set", "classes", "retrieval_set", "gate_metric"} <= inputs
    command = typer.main.get_command(app).commands["retrain"]  # type: ignore[attr-defined]
    known = {opt for param in command.params for opt in param.opts}
    runs = [
        step["run"]
        for job in workflow["jobs"].values()
        for step in job["steps"]
        if "lit-train retrain" in step.get("run", "")
    ]
    assert len(runs) == 2 and sum("--dry-run" in run for run in runs) == 1
    for run in runs:
        assert set(re.findall(r"--[a-z][a-z-]*", run)) <= known, run
        for option in ("--repository", "--name", "--report-dir"):
            assert option in run
    gated = next(run for run in runs if "--dry-run" not in run)
    assert "--min-accuracy" in gated and "--max-regression" in gated
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    assert any(s.get("uses", "").startswith("actions/upload-artifact") for s in steps)
    assert any("python-version" in s.get("with", {}) and s["with"]["python-version"] == "3.11" for s in steps)
