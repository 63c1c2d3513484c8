"""The second renderer's out-of-distribution set: deterministic, every class under its own name, light and
dark backgrounds, shapes in their named colours, readable as a labelled folder, scored like one, and
drawn without any of the training renderer's drawing code."""

from __future__ import annotations

import ast
import colorsys
import inspect
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import training.data.synthetic as synthetic
from lit_bundle.repository import load_bundle
from training.cli import app
from training.data import second_renderer
from training.data.labelled import LabelledSet
from training.data.second_renderer import (
    DARK_BACKGROUNDS,
    LIGHT_BACKGROUNDS,
    class_names,
    coverage,
    draw_spec,
    render,
    render_set,
    write_set,
)
from training.data.synthetic import COLOURS, SHAPES
from training.encoders import BundleEncoders
from training.ood_eval import ood_top1
from training.user_eval import EvaluationSets, evaluate_sets

REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"
SIZE = 64  # small and fast; the renderer's default is 128

# Hue range (degrees, inclusive; a range through 0 wraps) that each colour word's pixels must fall in.
HUES: dict[str, tuple[float, float]] = {
    "red": (350, 10),
    "orange": (25, 42),
    "yellow": (48, 64),
    "green": (105, 135),
    "cyan": (170, 190),
    "blue": (220, 245),
    "purple": (262, 290),
    "pink": (320, 345),
}


def _luminance(pixels: np.ndarray) -> np.ndarray:
    return pixels[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _border(pixels: np.ndarray) -> np.ndarray:
    return np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])


def _in_range(hue: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    lo, hi = bounds
    return (hue >= lo) & (hue <= hi) if lo <= hi else (hue >= lo) | (hue <= hi)


def test_same_seed_same_bytes_other_seed_other_images(tmp_path: Path) -> None:
    first = [item.image.tobytes() for item in render_set(per_class=1, seed=0, size=32)]
    again = [item.image.tobytes() for item in render_set(per_class=1, seed=0, size=32)]
    other = [item.image.tobytes() for item in render_set(per_class=1, seed=1, size=32)]
    assert first == again
    assert sum(a != b for a, b in zip(first, other, strict=True)) == len(first)  # every image differs
    for out in ("a", "b"):
        write_set(tmp_path / out, per_class=1, seed=0, size=32)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == 64
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    with Image.open(tmp_path / "a" / files[0]) as written:  # lossless: the files are the images
        assert written.convert("RGB").tobytes() in first


def test_every_class_covers_the_vocabulary_and_sizes_positions_rotations_vary() -> None:
    names = class_names()
    assert len(set(names)) == 64 and all(any(n.endswith(" " + s) for n in names) for s in SHAPES)
    assert all(any(n.startswith(c + " ") for n in names) for c in COLOURS)
    specs = [draw_spec(label, index) for label in range(64) for index in range(3)]
    assert {d.label for d in specs} == set(names)
    assert np.std([d.radius for d in specs]) > 0.03
    assert np.std([d.centre[0] for d in specs]) > 0.05 and np.std([d.centre[1] for d in specs]) > 0.05
    assert np.std([d.angle for d in specs if d.shape != "crescent"]) > 0.2
    assert {d.background[0] == d.background[1] for d in specs} == {True, False}  # plain and gradient
    assert {d.outline > 0 for d in specs} == {True, False}


def test_light_and_dark_backgrounds_by_border_luminance() -> None:
    items = list(render_set(per_class=2, seed=0, size=SIZE))
    light = [_luminance(_border(np.asarray(i.image))).mean() for i in items if i.light]
    dark = [_luminance(_border(np.asarray(i.image))).mean() for i in items if not i.light]
    assert len(light) == len(dark) == 64  # half of every class each
    assert min(light) > 170 and max(dark) < 80, (min(light), max(dark))
    used = {colour for i in items for colour in i.drawing.background}
    assert used & {"white", "lightgrey", "lavender"} and used & {"black", "#36454f", "navy"}
    assert used <= set(LIGHT_BACKGROUNDS) | set(DARK_BACKGROUNDS)


@pytest.mark.parametrize("colour", COLOURS)
def test_the_shape_has_the_named_colours_hue(colour: str) -> None:
    labels = [SHAPES.index(shape) * len(COLOURS) + COLOURS.index(colour) for shape in SHAPES]
    for label in labels:
        for index in range(2):  # one light, one dark background
            d = draw_spec(label, index, seed=5)
            pixels = np.asarray(render(d, SIZE)).reshape(-1, 3) / 255
            inside = pixels[coverage(d, SIZE).reshape(-1) > 0.99]
            assert len(inside) > 30, d
            hue = np.array([colorsys.rgb_to_hsv(*p)[0] * 360 for p in inside])
            share = _in_range(hue, HUES[colour]).mean()
            assert share > 0.97, f"{d.label} on {d.background}: {share:.2f} of its pixels in {HUES[colour]}"


def test_the_command_writes_a_folder_that_labelled_set_reads(tmp_path: Path) -> None:
    out = tmp_path / "ood"
    result = CliRunner().invoke(app, ["ood-set", str(out), "--per-class", "2", "--seed", "3", "--size", "48"])
    assert result.exit_code == 0, result.output
    labelled = LabelledSet.read(out)
    assert sorted(labelled.class_names) == sorted(class_names()) and len(labelled) == 128
    assert {p.name for p in (out / "red circle").iterdir()} == {"0000-light.png", "0001-dark.png"}
    with Image.open(out / "red circle" / "0001-dark.png") as image:
        assert image.size == (48, 48) and image.mode == "RGB"
    again = CliRunner().invoke(app, ["ood-set", str(out)])
    assert again.exit_code == 2 and "not empty" in again.output


def test_the_renderer_shares_only_the_vocabulary(monkeypatch: pytest.MonkeyPatch) -> None:
    tree = ast.parse(Path(second_renderer.__file__).read_text())
    imported = {
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert {name for module, name in imported if module == "training.data.synthetic"} == {"SHAPES", "COLOURS"}
    modules = {module for module, _ in imported} | {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    assert not any(m and (m.startswith("PIL.ImageDraw") or m == "training.data") for m in modules)
    assert "ImageDraw" not in {name for _, name in imported}

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the second renderer called the training renderer")

    # every function of the training renderer's module, whatever it is called
    functions = [
        n for n, f in vars(synthetic).items() if inspect.isfunction(f) and f.__module__ == synthetic.__name__
    ]
    assert "_shape_mask" in functions or len(functions) > 3
    for name in functions:
        monkeypatch.setattr(synthetic, name, forbidden)
    monkeypatch.setattr(synthetic.SyntheticWorld, "render", forbidden)
    monkeypatch.setattr(synthetic.ImageDraw, "Draw", forbidden)
    assert len(list(render_set(per_class=1, seed=2, size=32))) == 64


def test_ood_top1_on_the_committed_bundle_equals_the_folder_evaluation(tmp_path: Path) -> None:
    bundle = load_bundle(REPOSITORY, "lit_demo")
    encoders = BundleEncoders(bundle)
    templates = list(bundle.manifest.templates)
    scores = ood_top1(encoders, templates, per_class=1, seed=4, size=SIZE)
    assert set(scores) == {"top1", "light_top1", "dark_top1"}
    assert all(0.0 <= value <= 1.0 for value in scores.values())
    assert scores["top1"] == pytest.approx((scores["light_top1"] + scores["dark_top1"]) / 2)  # 32 + 32
    write_set(tmp_path / "ood", per_class=1, seed=4, size=SIZE)
    sets = EvaluationSets(tuple(templates), LabelledSet.read(tmp_path / "ood"))
    assert evaluate_sets(encoders, sets, progress=False).metrics["top1"] == pytest.approx(scores["top1"])


def test_ood_eval_scores_a_checkpoint_through_torch(tmp_path: Path) -> None:
    from tests.helpers import tiny_checkpoint

    checkpoint = tiny_checkpoint(tmp_path, steps=1)
    options = ["--per-class", "1", "--seed", "0", "--seed", "1", "--size", "32", "-q"]
    result = CliRunner().invoke(app, ["ood-eval", str(checkpoint), *options])
    assert result.exit_code == 0, result.output
    assert "light backgrounds" in result.output and "mean ± sd" in result.output


def test_a_word_the_renderer_cannot_draw_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(second_renderer, "SHAPES", (*SHAPES, "arrow"))
    monkeypatch.setattr(second_renderer, "COLOURS", (*COLOURS, "brown"))
    with pytest.raises(ValueError, match="'arrow', 'brown'"):
        class_names()
