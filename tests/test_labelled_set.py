"""Labelled evaluation sets: image folders per class, CSV/JSONL manifests, class files, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from training.data.labelled import LabelledSet, read_class_file
from training.data.pairs import DataError


def image(path: Path, colour: tuple[int, int, int] = (200, 10, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 9), colour).save(path)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "eval"
    for name, count in (("n02", 2), ("n01", 3)):
        for i in range(count):
            image(root / name / f"{i}.png")
    image(root / "n02" / "nested" / "deep.jpg")
    (root / "n01" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    image(root / ".hidden" / "x.png")
    return root


def test_folder_classes_are_the_sorted_folder_names(folder: Path) -> None:
    data = LabelledSet.read(folder)
    assert data.class_names == ["n01", "n02"]
    assert data.labels == [0, 0, 0, 1, 1, 1]  # nested images count, text files and hidden folders do not
    assert [item.path.name for item in data.items][-1] == "deep.jpg"
    assert all(im.size == (12, 9) and im.mode == "RGB" for im in data.images())


def test_a_class_file_names_orders_and_adds_classes(folder: Path, tmp_path: Path) -> None:
    classes = tmp_path / "classes.txt"
    classes.write_text("# folder<TAB>prompt name\nn02\tgoldfish\n\nn01\ttench\nn03\tshark\n")
    data = LabelledSet.read(folder, classes)
    assert data.class_names == ["goldfish", "tench", "shark"]
    assert data.classes.labels == ["n02", "n01", "n03"]
    assert data.labels == [1, 1, 1, 0, 0, 0]


def test_manifest_sets_and_their_keys(tmp_path: Path) -> None:
    a, b = image(tmp_path / "img" / "a.png"), image(tmp_path / "img" / "b.png")
    csv_file = tmp_path / "set.csv"
    csv_file.write_text(f"file,cls\nimg/a.png,dog\n{b},cat\n")
    data = LabelledSet.read(csv_file, image_key="file", label_key="cls")
    assert data.class_names == ["cat", "dog"] and data.labels == [1, 0]
    assert [i.path for i in data.items] == [a, b]  # relative to the manifest's folder, or absolute
    jsonl = tmp_path / "set.jsonl"
    rows = [{"image": "img/a.png", "label": "zebra"}, {"image": "img/b.png", "label": "ant"}]
    jsonl.write_text("\n".join(json.dumps(row) for row in rows))
    assert LabelledSet.read(jsonl).labels == [1, 0]


def test_the_list_hash_follows_paths_and_labels_only(folder: Path, tmp_path: Path) -> None:
    first = LabelledSet.read(folder).sha256()
    assert LabelledSet.read(folder).sha256() == first
    image(folder / "n01" / "0.png", (0, 0, 255))  # new pixels, same list
    assert LabelledSet.read(folder).sha256() == first
    image(folder / "n01" / "9.png")
    assert LabelledSet.read(folder).sha256() != first


def test_limit_keeps_an_even_spread(folder: Path) -> None:
    data = LabelledSet.read(folder)
    assert data.limit(0) is data and data.limit(100) is data
    assert data.limit(2).labels == [0, 1]


@pytest.mark.parametrize(
    ("case", "hint"),
    [
        ("missing", "give an image folder per class"),
        ("flat", "put each class's images in a folder named after the class"),
        ("unknown_label", "add them to the class file"),
        ("bad_row", "needs a non-empty 'image' and 'label'"),
        ("suffix", "give a folder, or a .csv/.jsonl file"),
        ("duplicate_class", "is listed twice"),
    ],
)
def test_refusals_say_what_to_give(tmp_path: Path, case: str, hint: str) -> None:
    classes = None
    if case == "missing":
        source = tmp_path / "nowhere"
    elif case == "flat":
        source = tmp_path / "flat"
        image(source / "a.png")
    elif case in ("unknown_label", "duplicate_class"):
        source = tmp_path / "eval"
        image(source / "cat" / "0.png")
        classes = tmp_path / "classes.txt"
        classes.write_text("dog\n" if case == "unknown_label" else "cat\ncat\n")
    elif case == "bad_row":
        source = tmp_path / "set.csv"
        source.write_text("image,label\na.png,\n")
    else:
        source = tmp_path / "set.tsv"
        source.write_text("x")
    with pytest.raises(DataError, match=hint):
        LabelledSet.read(source, classes)


def test_unreadable_images_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "eval" / "cat" / "0.jpg"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"0\.jpg cannot be read"):
        list(LabelledSet.read(tmp_path / "eval").images())


def test_class_file_needs_classes(tmp_path: Path) -> None:
    empty = tmp_path / "classes.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(DataError, match="lists no classes"):
        read_class_file(empty)
