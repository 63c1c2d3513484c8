"""Evaluation against fake "models" whose right answers are known in advance.

The fake text tower embeds a text as the one-hot vector of the class word it contains (plus, for one
template, a "style" direction); fake images are one-hot vectors of their class plus a little noise.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from training.evaluate import (
    build_classifier,
    confusion_matrix,
    most_confused,
    retrieval_recall,
    topk_accuracy,
    write_report,
    zero_shot_scores,
)

CLASSES = ["cat", "dog", "bird", "fish", "frog", "lion"]
STYLE = len(CLASSES)  # index of the extra "sketch style" dimension
DIM = len(CLASSES) + 1


class FakeTextTower:
    """One-hot of the class word, scaled by 3 (so normalisation matters); "sketch" adds a style axis."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> torch.Tensor:
        self.calls.append(list(texts))
        out = torch.zeros(len(texts), DIM)
        for row, text in enumerate(texts):
            words = text.rstrip(".").split()
            (cls,) = [i for i, name in enumerate(CLASSES) if name in words]
            if "sketch" in words:
                out[row, cls], out[row, STYLE] = 1.0, 1.0
            else:
                out[row, cls] = 3.0
        return out


def images_of(labels: list[int], noise: float = 0.05, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    emb = F.one_hot(torch.tensor(labels), DIM).float()
    return emb + noise * torch.rand(len(labels), DIM, generator=gen)


# ------------------------------------------------------------------------------ build_classifier


def test_single_template_classifier_is_the_normalised_class_axes():
    clf = build_classifier(FakeTextTower(), CLASSES, ["a photo of a {}."], progress=False)
    assert clf.shape == (len(CLASSES), DIM)
    torch.testing.assert_close(clf, torch.eye(len(CLASSES), DIM))


def test_texts_are_batched_across_classes():
    tower = FakeTextTower()
    build_classifier(tower, CLASSES, ["a photo of a {}.", "a sketch of a {}."], batch_size=5, progress=False)
    assert [len(c) for c in tower.calls] == [5, 5, 2]
    assert tower.calls[0][:3] == ["a photo of a cat.", "a sketch of a cat.", "a photo of a dog."]


def test_prompt_ensemble_matches_hand_computation():
    templates = ["a photo of a {}.", "a sketch of a {}."]
    clf = build_classifier(FakeTextTower(), CLASSES, templates, batch_size=4, progress=False)
    # Per class c: normalised embeddings are e_c and (e_c + e_style)/sqrt(2); mean, then renormalise.
    a, b = (1 + 1 / math.sqrt(2)) / 2, (1 / math.sqrt(2)) / 2
    norm = math.hypot(a, b)
    expected = torch.zeros(len(CLASSES), DIM)
    expected[:, : len(CLASSES)] = torch.eye(len(CLASSES)) * a / norm
    expected[:, STYLE] = b / norm
    torch.testing.assert_close(clf, expected)
    # Averaging the raw (unnormalised) embeddings would weight the photo template 3:1 instead.
    raw = F.normalize(torch.tensor([(3 + 1) / 2, 1 / 2]), dim=0)
    assert not math.isclose(clf[0, 0].item(), raw[0].item(), rel_tol=1e-3)


def test_a_differently_scoring_template_changes_scores_as_computed_by_hand():
    image = F.normalize(torch.tensor([[1.0, 0, 0, 0, 0, 0, 1.0]]), dim=-1)  # a cat, drawn as a sketch
    photo_only = build_classifier(FakeTextTower(), CLASSES, ["a photo of a {}."], progress=False)
    ensemble = build_classifier(
        FakeTextTower(), CLASSES, ["a photo of a {}.", "a sketch of a {}."], progress=False
    )
    assert zero_shot_scores(image, photo_only)[0, 0].item() == pytest.approx(1 / math.sqrt(2))
    a, b = (1 + 1 / math.sqrt(2)) / 2, (1 / math.sqrt(2)) / 2
    assert zero_shot_scores(image, ensemble)[0, 0].item() == pytest.approx(
        (a + b) / (math.sqrt(2) * math.hypot(a, b))
    )
    # The style axis is shared by all classes, so a wrong class scores b / (sqrt(2) * |(a, b)|) too.
    assert zero_shot_scores(image, ensemble)[0, 1].item() == pytest.approx(
        b / (math.sqrt(2) * math.hypot(a, b))
    )


def test_build_classifier_rejects_wrong_output_shape():
    with pytest.raises(ValueError, match="shape"):
        build_classifier(lambda texts: torch.zeros(len(texts) + 1, 3), CLASSES, ["{}"], progress=False)


def test_progress_bar_does_not_break_anything(capsys):
    clf = build_classifier(FakeTextTower(), CLASSES, ["a {}."], batch_size=2, progress=True)
    assert clf.shape == (len(CLASSES), DIM)
    assert "zero-shot classifier" in capsys.readouterr().err


# ------------------------------------------------------------------------------ zero-shot accuracy


def test_end_to_end_three_of_four_right():
    clf = build_classifier(FakeTextTower(), CLASSES, ["a photo of a {}.", "a {}."], progress=False)
    labels = torch.tensor([0, 1, 2, 3])
    images = images_of([0, 1, 2, 4])  # the last "fish" looks like a frog
    scores = zero_shot_scores(images, clf)
    assert scores.shape == (4, len(CLASSES))
    assert scores.abs().max() <= 1 + 1e-6
    acc = topk_accuracy(scores, labels, ks=(1, 5))
    assert acc["top1"] == 0.75
    assert acc["top5"] == 1.0


def test_top5_beats_top1_on_a_hand_built_score_table():
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0],  # label 0: rank 0
            [0.8, 0.7, 0.0, 0.0, 0.0, 0.0, 0.0],  # label 1: rank 1
            [0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0],  # label 6: rank 6
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],  # label 2: rank 4
        ]
    )
    labels = torch.tensor([0, 1, 6, 2])
    assert topk_accuracy(scores, labels, ks=(1, 2, 5, 7)) == {
        "top1": 0.25,
        "top2": 0.5,
        "top5": 0.75,
        "top7": 1.0,
    }


def test_k_larger_than_num_classes_is_clamped():
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.2, 0.3]])
    assert topk_accuracy(scores, torch.tensor([0, 0]), ks=(1, 5)) == {"top1": 0.5, "top5": 1.0}


def test_ties_count_against_the_true_class():
    scores = torch.zeros(3, 4)  # a collapsed model
    assert topk_accuracy(scores, torch.tensor([0, 1, 2]), ks=(1, 3, 4)) == {
        "top1": 0.0,
        "top3": 0.0,
        "top4": 1.0,
    }


def test_topk_rejects_bad_labels():
    with pytest.raises(ValueError, match="labels"):
        topk_accuracy(torch.zeros(2, 3), torch.tensor([0, 3]))


# ------------------------------------------------------------------------------ retrieval

# Each text is a permutation of (1, 2, 3, 4), so all texts have the same norm; with one-hot images,
# sim[image i, text j] is proportional to T[j][i]. Ranks of the right partner, worked out by hand:
#   text->image (row j of T):    [3, 1, 0, 2]
#   image->text (column i of T): [3, 0, 0, 3]
T = [[1, 2, 3, 4], [2, 3, 1, 4], [2, 1, 4, 3], [4, 1, 3, 2]]


@pytest.mark.parametrize("chunk", [4096, 3, 1])
def test_retrieval_recall_on_known_ranks(chunk: int):
    images = torch.diag(torch.tensor([1.0, 5.0, 0.2, 3.0]))  # unequal norms: must be normalised away
    texts = torch.tensor(T, dtype=torch.float32)
    got = retrieval_recall(images, texts, ks=(1, 2, 3, 10), chunk=chunk)
    assert got == {
        "i2t_r1": 0.5,
        "i2t_r2": 0.5,
        "i2t_r3": 0.5,
        "i2t_r10": 1.0,
        "t2i_r1": 0.25,
        "t2i_r2": 0.5,
        "t2i_r3": 0.75,
        "t2i_r10": 1.0,
    }


def test_retrieval_perfect_pairs_and_default_keys():
    emb = images_of([0, 1, 2, 3, 4, 5], noise=0.01)
    got = retrieval_recall(emb, emb.clone())
    assert set(got) == {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"}
    assert all(v == 1.0 for v in got.values())


def test_retrieval_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        retrieval_recall(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="each image at least once"):
        retrieval_recall(torch.eye(3), torch.eye(3)[:2], text_image=torch.tensor([0, 0]))


# Three images, five captions: image 0 has texts 0, 1; image 1 has texts 2, 3; image 2 has text 4.
# sim[image i, text j] is proportional to S[i][j]; ranks worked out by hand:
#   image->text, other images' texts above the best own text: [1 (text 4), 0, 4 (texts 0-3)]
#   text->image, other images above the own image:            [1, 1, 0, 1, 1]
S = [[0.5, 0.7, 0.1, 0.2, 0.9], [0.1, 0.2, 0.8, 0.3, 0.0], [0.9, 0.9, 0.4, 0.6, 0.3]]


@pytest.mark.parametrize("chunk", [4096, 2, 1])
def test_retrieval_with_several_captions_per_image(chunk: int):
    images = torch.eye(4)[:3]
    columns = 0.5 * torch.tensor(S).T
    # a fourth component gives every text the same norm, so cosine similarity keeps S's order in each row
    texts = torch.cat([columns, (1 - columns.square().sum(1, keepdim=True)).sqrt()], dim=1)
    owners = torch.tensor([0, 0, 1, 1, 2])
    got = retrieval_recall(images, texts, ks=(1, 2, 3, 5), chunk=chunk, text_image=owners)
    expected = {"i2t_r1": 1 / 3, "i2t_r2": 2 / 3, "i2t_r3": 2 / 3, "i2t_r5": 1.0}
    expected |= {"t2i_r1": 1 / 5, "t2i_r2": 1.0, "t2i_r3": 1.0, "t2i_r5": 1.0}
    assert got == pytest.approx(expected)


def test_most_confused_lists_the_largest_off_diagonal_cells():
    confusion = np.array([[5, 3, 0], [0, 4, 1], [2, 0, 0]])
    got = most_confused(confusion, ["a", "b", "c"], limit=2)
    assert got == [
        {"true": "a", "predicted": "b", "count": 3, "fraction": 3 / 8},
        {"true": "c", "predicted": "a", "count": 2, "fraction": 1.0},
    ]
    assert most_confused(np.eye(3, dtype=int), ["a", "b", "c"]) == []


# ------------------------------------------------------------------------------ confusion matrix


def test_confusion_matrix_counts_rows_true_columns_predicted():
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    preds = np.array([0, 1, 1, 2, 0, 2])
    cm = confusion_matrix(labels, preds, num_classes=4)
    expected = np.array([[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(cm, expected)
    assert cm.dtype == np.int64 and cm.sum() == 6


def test_confusion_matrix_rejects_out_of_range():
    with pytest.raises(ValueError, match="predictions"):
        confusion_matrix([0, 1], [0, 5], num_classes=3)


# ------------------------------------------------------------------------------ report


def _assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as img:
        img.verify()
        assert img.format == "PNG"


def test_write_report_with_everything(tmp_path: Path):
    names = [f"class_{i}" for i in range(64)]
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(64), 3)
    preds = np.where(rng.random(labels.size) < 0.7, labels, rng.integers(0, 64, labels.size))
    cm = confusion_matrix(labels, preds, 64)
    history = [
        {"step": s, "loss": 4.0 / (s + 1), "lr": 1e-3 * min(1, s / 5), "temperature": 10.0} for s in range(20)
    ]
    metrics = {"top1": 0.7, "top5": 0.9, "num_images": 192, "model": "demo|tiny", "bad": float("nan")}
    out = tmp_path / "report"
    paths = write_report(out, "Demo eval", metrics, names, cm, history, highlight_classes=[60, 61, 62, 63])

    assert set(paths) == {"json", "markdown", "loss", "confusion"}
    assert all(p.parent == out for p in paths.values())
    _assert_png(paths["loss"])
    _assert_png(paths["confusion"])
    report = json.loads(paths["json"].read_text())
    assert report["title"] == "Demo eval"
    assert report["metrics"]["top1"] == 0.7 and report["metrics"]["bad"] is None
    assert report["history"][3] == history[3]
    assert report["files"] == {
        "loss": "loss.png",
        "confusion": "confusion.png",
        "markdown": "report.md",
        "json": "report.json",
    }
    assert np.array_equal(np.array(report["confusion"]), cm)
    assert report["highlight_classes"] == [60, 61, 62, 63]
    md = paths["markdown"].read_text()
    assert md.startswith("# Demo eval")
    assert "| top1 | 0.7000 |" in md and "| num_images | 192 |" in md and "demo\\|tiny" in md
    assert "(loss.png)" in md and "(confusion.png)" in md and "class_63" in md
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))


def test_write_report_metrics_only(tmp_path: Path):
    paths = write_report(tmp_path, "Metrics", {"top1": 0.5})
    assert set(paths) == {"json", "markdown"}
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["metrics"] == {"top1": 0.5} and report["history"] == []
    assert not (tmp_path / "loss.png").exists()


def test_write_report_small_confusion_without_names_and_loss_only_history(tmp_path: Path):
    cm = confusion_matrix([0, 1, 2, 2], [0, 2, 2, 2], 3)
    paths = write_report(tmp_path, "Small", {"top1": 0.75}, confusion=cm, history=[{"step": 0, "loss": 1.0}])
    _assert_png(paths["confusion"])
    _assert_png(paths["loss"])


def test_write_report_rejects_name_count_mismatch(tmp_path: Path):
    with pytest.raises(ValueError, match="class names"):
        write_report(tmp_path, "x", {}, class_names=["a"], confusion=np.eye(2, dtype=int))
