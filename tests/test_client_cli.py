"""The ``lit`` command line, run as a real process (``python -m lit_client.cli``) against one real gateway
process, over a folder tree with nested images, a file that is not an image and a broken image. Table, JSON
Lines and CSV outputs must match the reference scores; a failed image means exit code 1 and a summary on
stderr; usage errors exit 2. ``lit models`` and ``--model`` run against a gateway serving two models.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from harness.gateway import ROOT, running_gateway
from harness.images import LABELS
from harness.repositories import pair_environment
from tests.samples import Reference, images

KEY = "cli-test-key"
GOOD = ["photos/a/one.png", "photos/a/deeper/two.PNG", "photos/b/three.png", "photos/top.png"]
BROKEN = "photos/b/broken.png"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_gateway(tmp_path_factory.mktemp("gw"), LIT_API_KEYS=json.dumps([KEY])) as url:
        yield url


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway serving lit_demo and lit_other (the default), and naming lit_missing, which fails to load."""
    work = tmp_path_factory.mktemp("pair")
    with running_gateway(work, **pair_environment(work), LIT_API_KEYS=json.dumps([KEY])) as url:
        yield url


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``photos/`` with four images in nested folders, a text file (skipped) and a broken PNG (fails)."""
    root = tmp_path_factory.mktemp("tree")
    for name, blob in zip(GOOD, images(len(GOOD), offset=20), strict=True):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(blob)
    (root / "photos/notes.txt").write_text("not an image\n")
    (root / BROKEN).write_bytes(images(1)[0][:60])
    return root


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference()


@pytest.fixture(scope="module")
def expected(tree: Path, reference: Reference) -> dict[str, np.ndarray]:
    """Reference scores over LABELS for each good image."""
    scores = reference.scores([(tree / name).read_bytes() for name in GOOD], LABELS, None)
    return dict(zip(GOOD, scores, strict=True))


def lit(tree: Path, url: str, *args: str, key: str | None = KEY) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LIT_URL": url, "COLUMNS": "200"}
    env.pop("LIT_API_KEY", None)
    if key is not None:
        env["LIT_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "lit_client.cli", *args], cwd=tree, env=env, capture_output=True, text=True
    )


def labels_option() -> str:
    return ",".join(LABELS)


def test_jsonl_walks_the_tree_and_a_broken_image_fails_with_a_summary(
    server: str, tree: Path, expected: dict[str, np.ndarray]
) -> None:
    done = lit(tree, server, "classify", "photos", "--labels", labels_option(), "-f", "jsonl", "-c", "3")
    assert done.returncode == 1, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["path"] for r in records] == sorted([*GOOD, BROKEN], key=lambda p: Path(p).parts)
    for record in records:
        if record["path"] == BROKEN:
            assert record["error"]["status"] == 400
            assert record["error"]["code"] == "undecodable_image"
            continue
        assert record["model"] == {"name": "lit_demo", "version": 1}
        scores = {p["label"]: p["score"] for p in record["predictions"]}
        assert np.abs(np.array([scores[label] for label in LABELS]) - expected[record["path"]]).max() <= 1e-5
    assert "4 ok, 1 failed" in done.stderr
    assert f"{BROKEN}: 400 undecodable_image:" in done.stderr
    assert "5/5" in done.stderr  # the progress bar's last state


def test_csv_of_good_images_exits_0(server: str, tree: Path, reference: Reference) -> None:
    done = lit(
        tree, server, "classify", "photos/a", "photos/b/three.png", "photos/top.png",
        "--label", LABELS[0], "--label", LABELS[1], "--label", LABELS[2], "-f", "csv", "--top-k", "2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert list(rows[0]) == ["image", "rank", "label", "score", "error"]
    order = ["photos/a/deeper/two.PNG", "photos/a/one.png", "photos/b/three.png", "photos/top.png"]
    assert [r["image"] for r in rows] == [name for name in order for _ in range(2)]
    scores = reference.scores([(tree / name).read_bytes() for name in order], LABELS[:3], None)
    for name, three in zip(order, scores, strict=True):
        best = np.argsort(-three)[:2]
        mine = [r for r in rows if r["image"] == name]
        assert [r["rank"] for r in mine] == ["1", "2"]
        assert [r["label"] for r in mine] == [LABELS[i] for i in best]
        assert np.abs(np.array([float(r["score"]) for r in mine]) - three[best]).max() <= 1e-5
        assert all(r["error"] == "" for r in mine)
    assert "4 ok, 0 failed" in done.stderr


def test_table(server: str, tree: Path, expected: dict[str, np.ndarray]) -> None:
    done = lit(tree, server, "classify", "photos", "--labels", labels_option(), "--top-k", "1")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    for name in GOOD:
        (line,) = [line for line in lines if f" {name} " in line]
        best = int(np.argmax(expected[name]))
        assert f" {LABELS[best]} " in line
        assert f"{expected[name][best]:.4f}" in line
    (line,) = [line for line in lines if f" {BROKEN} " in line]
    assert "undecodable_image" in line


def test_label_sets_create_list_classify_delete(
    server: str, tree: Path, expected: dict[str, np.ndarray]
) -> None:
    (tree / "labels.txt").write_text("\n".join(LABELS) + "\n\n")
    created = lit(tree, server, "label-sets", "create", "cli-shapes", "--from-file", "labels.txt")
    assert (created.returncode, created.stdout.strip()) == (0, f"cli-shapes: {len(LABELS)} labels"), (
        created.stderr
    )
    small = lit(tree, server, "label-sets", "create", "cli-small", "--labels", "red circle,blue star")
    assert small.returncode == 0, small.stderr

    listed = lit(tree, server, "label-sets", "list", "-f", "jsonl")
    counts = {r["name"]: r["count"] for r in map(json.loads, listed.stdout.splitlines())}
    assert counts == {"cli-shapes": len(LABELS), "cli-small": 2}
    table = lit(tree, server, "label-sets", "list").stdout
    assert "cli-shapes" in table and "cli-small" in table

    done = lit(tree, server, "classify", "photos/top.png", "--label-set", "cli-shapes", "-f", "jsonl")
    assert done.returncode == 0, done.stderr
    scores = {p["label"]: p["score"] for p in json.loads(done.stdout)["predictions"]}
    assert np.abs(np.array([scores[label] for label in LABELS]) - expected["photos/top.png"]).max() <= 1e-5

    for name in ("cli-shapes", "cli-small"):
        deleted = lit(tree, server, "label-sets", "delete", name)
        assert (deleted.returncode, deleted.stdout.strip()) == (0, f"deleted {name}")
    assert lit(tree, server, "label-sets", "list", "-f", "jsonl").stdout == ""
    again = lit(tree, server, "label-sets", "delete", "cli-shapes")
    assert again.returncode == 1
    assert "404 unknown_label_set" in again.stderr


def test_an_unknown_label_set_stops_the_run(server: str, tree: Path) -> None:
    done = lit(tree, server, "classify", "photos", "--label-set", "nope", "-c", "1", "-f", "jsonl")
    assert done.returncode == 1
    assert "unknown_label_set" in done.stderr
    assert "not sent (stopped after unknown_label_set)" in done.stderr
    assert len(done.stdout.splitlines()) < len(GOOD) + 1


def test_without_the_key_every_command_fails_unauthorized(server: str, tree: Path) -> None:
    done = lit(tree, server, "classify", "photos/top.png", "--labels", "a,b", key=None)
    assert done.returncode == 1
    assert "0 ok, 1 failed" in done.stderr and "401 unauthorized" in done.stderr
    listed = lit(tree, server, "label-sets", "list", key="wrong")
    assert listed.returncode == 1 and "401 unauthorized" in listed.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["classify", "photos"],  # no labels
        ["classify", "photos", "--labels", "a,b", "--label-set", "s"],  # both
        ["classify", "missing-folder", "--labels", "a,b"],
        ["classify", "photos", "--labels", "a,b", "--top-k", "0"],
        ["classify", "photos", "--labels", "a,b", "--format", "xml"],
        ["label-sets", "create", "empty"],
    ],
    ids=["no_labels", "labels_and_label_set", "missing_path", "top_k_0", "bad_format", "no_labels_to_create"],
)
def test_usage_errors_exit_2(server: str, tree: Path, args: list[str]) -> None:
    done = lit(tree, server, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""


def test_a_folder_without_images_is_a_usage_error(server: str, tree: Path) -> None:
    (tree / "empty/sub").mkdir(parents=True)
    (tree / "empty/sub/readme.md").write_text("nothing here")
    done = lit(tree, server, "classify", "empty", "--labels", "a,b")
    assert done.returncode == 2
    assert "no image files" in done.stderr


def test_models_lists_every_model(pair: str, tree: Path) -> None:
    done = lit(tree, pair, "models", "-f", "jsonl")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["name"], r["state"], r["default"]) for r in records] == [
        ("lit_demo", "ready", False),
        ("lit_other", "ready", True),
        ("lit_missing", "failed", False),
    ]
    assert (records[0]["version"], records[0]["embed_dim"], records[0]["image_size"]) == (1, 256, 64)
    assert "lit_missing" in records[2]["error"] and records[2]["version"] is None

    table = lit(tree, pair, "models")
    assert table.returncode == 0, table.stderr
    header = next(line for line in table.stdout.splitlines() if " name " in line)
    columns = ("version", "state", "backend", "precision", "dim", "image_size", "loss", "default", "error")
    for column in columns:
        assert f" {column} " in header
    (other,) = [line for line in table.stdout.splitlines() if " lit_other " in line]
    assert " ready " in other and " onnxruntime " in other and " 256 " in other and " yes " in other
    (missing,) = [line for line in table.stdout.splitlines() if " lit_missing " in line]
    assert " failed " in missing

    rows = list(csv.DictReader(io.StringIO(lit(tree, pair, "models", "-f", "csv").stdout)))
    assert [(r["name"], r["dim"], r["default"]) for r in rows] == [
        ("lit_demo", "256", ""),
        ("lit_other", "256", "yes"),
        ("lit_missing", "", ""),
    ]


def test_model_option_picks_the_model(pair: str, tree: Path, expected: dict[str, np.ndarray]) -> None:
    for option, model in (
        ([], "lit_other"),
        (["--model", "lit_demo"], "lit_demo"),
        (["-m", "lit_other"], "lit_other"),
    ):
        done = lit(
            tree, pair, "classify", "photos/top.png", "--labels", labels_option(), "-f", "jsonl", *option
        )
        assert done.returncode == 0, done.stderr
        record = json.loads(done.stdout)
        assert record["model"] == {"name": model, "version": 1}
        scores = {p["label"]: p["score"] for p in record["predictions"]}
        assert (
            np.abs(np.array([scores[label] for label in LABELS]) - expected["photos/top.png"]).max() <= 1e-5
        )

    created = lit(
        tree,
        pair,
        "label-sets",
        "create",
        "cli-pair",
        "--labels",
        "red circle,blue star",
        "--model",
        "lit_demo",
    )
    assert (created.returncode, created.stdout.strip()) == (0, "cli-pair: 2 labels"), created.stderr
    done = lit(
        tree, pair, "classify", "photos/top.png", "--label-set", "cli-pair", "-m", "lit_other", "-f", "jsonl"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["model"]["name"] == "lit_other"
    assert lit(tree, pair, "label-sets", "delete", "cli-pair").returncode == 0

    unknown = lit(tree, pair, "classify", "photos", "--labels", "a,b", "--model", "nope", "-c", "1")
    assert unknown.returncode == 1
    assert (
        "404 unknown_model" in unknown.stderr and "not sent (stopped after unknown_model)" in unknown.stderr
    )
    refused = lit(tree, pair, "label-sets", "create", "cli-nope", "--labels", "a,b", "--model", "nope")
    assert refused.returncode == 1 and "404 unknown_model" in refused.stderr
