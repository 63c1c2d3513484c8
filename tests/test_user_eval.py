"""Evaluation on the user's data against fake encoders whose right answers are known in advance.

The fake image encoder embeds a picture as the one-hot vector of its dominant colour channel; the fake
text encoder as the one-hot vector of the colour word it contains. So every answer is known: a red
picture filed under "blue" is the one mistake a perfect model makes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import tiny_config
from training.data.split import in_split
from training.user_eval import (
    EvaluationError,
    EvaluationSets,
    RetrievalSource,
    check_inputs,
    evaluate_retrieval,
    evaluate_sets,
)

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 30), "blue": (10, 30, 240)}
WORDS = list(COLOURS)


class FakeEncoders:
    def __init__(self) -> None:
        self.text_calls = 0

    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        channels = [int(np.asarray(im).reshape(-1, 3).mean(axis=0).argmax()) for im in images]
        return torch.nn.functional.one_hot(torch.tensor(channels), 3).float()

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        self.text_calls += len(texts)
        rows = [[float(word in text.split()) for word in WORDS] for text in texts]
        return torch.nn.functional.normalize(torch.tensor(rows) + 1e-3, dim=-1)


def picture(path: Path, colour: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (10, 10), COLOURS[colour]).save(path)
    return path


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    root = tmp_path / "eval"
    for colour in WORDS:
        for i in range(2):
            picture(root / colour / f"{i}.png", colour)
    picture(root / "blue" / "wrong.png", "red")  # filed under blue, but red: the one known mistake
    return root


def test_zero_shot_on_an_image_folder_gives_the_known_answers(labelled: Path) -> None:
    sets = EvaluationSets.for_config(None, ["a {} thing.", "the {}."], zero_shot=labelled)
    encoders = FakeEncoders()
    result = evaluate_sets(encoders, sets, progress=False)
    assert result.metrics["top1"] == pytest.approx(6 / 7) and result.metrics["top5"] == 1.0
    assert result.metrics["eval_images"] == 7
    assert result.class_names == ["blue", "green", "red"]
    assert result.confusion.tolist() == [[2, 0, 1], [0, 2, 0], [0, 0, 2]]
    assert encoders.text_calls == 6  # three classes x two templates, once each
    (data,) = result.data
    assert (data.kind, data.split, data.images, data.texts) == ("zero_shot", "all", 7, 3)
    assert data.metrics == ("top1", "top5")


def manifest(tmp_path: Path) -> Path:
    rows = ["image,caption"]
    for i, colour in enumerate(WORDS * 4):
        picture(tmp_path / "img" / f"{i}.png", colour)
        rows += [f"img/{i}.png,a {colour} picture", f"img/{i}.png,{colour}"]
    path = tmp_path / "pairs.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_retrieval_groups_the_captions_of_one_image(tmp_path: Path) -> None:
    source = RetrievalSource.named(str(manifest(tmp_path)))
    assert source.kind == "manifest"
    metrics, data = evaluate_retrieval(FakeEncoders(), source, progress=False)
    assert (data.images, data.texts, data.split) == (12, 24, "all")
    # each colour has 4 identical images, and a caption is a hit only for its own: ties count against it
    assert metrics["t2i_r1"] == 0 and metrics["t2i_r5"] == 1.0
    assert metrics["i2t_r1"] == 0 and metrics["i2t_r10"] == 1.0
    limited, described = evaluate_retrieval(FakeEncoders(), source, max_images=3, progress=False)
    assert described.images == 3 and limited["i2t_r1"] == 1.0  # three colours, one image each
    assert described.sha256 != data.sha256


def test_the_held_out_split_is_found_again_from_the_config(tmp_path: Path, tower_weights: Path) -> None:
    path = manifest(tmp_path)
    cfg = tiny_config(tmp_path, tower_weights, "data.kind=manifest", f"data.path={path}", "data.holdout=0.3")
    source = RetrievalSource.heldout_of(cfg)
    assert source is not None and source.split == "heldout"
    names = [name for name, _, _ in source.groups()]
    expected = [f"img/{i}.png" for i in range(12) if in_split(f"img/{i}.png", "heldout", 0.3)]
    assert names == expected and 0 < len(names) < 12
    assert (
        RetrievalSource.heldout_of(tiny_config(tmp_path, tower_weights, "data.holdout=0.3")) is None
    )  # synthetic
    named = tiny_config(tmp_path, tower_weights, "data.kind=manifest", f"evaluation.retrieval={path}")
    assert named.data.holdout == 0.0  # a separate set: nothing carved out of training


def test_check_inputs_come_from_the_sets_or_a_folder(labelled: Path, tmp_path: Path) -> None:
    sets = EvaluationSets.for_config(None, ["a {} thing."], zero_shot=labelled)
    inputs = check_inputs(sets)
    assert len(inputs.images) == 7 and inputs.texts == ["a blue thing.", "a green thing.", "a red thing."]
    folder = tmp_path / "checks"
    picture(folder / "a.png", "green")
    chosen = check_inputs(sets, check_images=folder)
    assert len(chosen.images) == 1 and chosen.sources == [f"--check-images {folder}"]
    with pytest.raises(EvaluationError, match="no check images: pass --check-images DIR"):
        check_inputs(EvaluationSets(("a {}.",)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvaluationError, match="holds no images"):
        check_inputs(sets, check_images=tmp_path / "empty")
    with pytest.raises(EvaluationError, match="is not a folder: give a folder of images"):
        check_inputs(sets, check_images=tmp_path / "nowhere")
