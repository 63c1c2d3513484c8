"""Prompt template sets: built-in data files, validation and expansion."""

import hashlib
from pathlib import Path

import pytest

from training.templates import builtin_names, load_templates


def test_builtin_sets_have_the_documented_sizes():
    assert {"imagenet80", "imagenet7", "demo"} <= set(builtin_names())
    full, simple, demo = load_templates("imagenet80"), load_templates("imagenet7"), load_templates("demo")
    assert len(full) == 80 and len(set(full)) == 80
    assert len(simple) == 7
    assert len(demo) == 4
    assert all(t.count("{}") == 1 for t in full + simple + demo)


def test_imagenet80_matches_clip_order_and_ends():
    full = load_templates("imagenet80")
    assert full[0] == "a bad photo of a {}."
    assert full[35] == "a {} in a video game."
    assert full[-1] == "a tattoo of the {}."
    # Guards the exact text, checked against CLIP's notebook and open_clip's OPENAI_IMAGENET_TEMPLATES.
    digest = hashlib.sha256("\n".join(full).encode()).hexdigest()
    assert digest == "4f976686fb651bb5803d4689dcd849f75efe0ef19a3c801355bc9a6f03c8a5af"


def test_imagenet7_is_clips_forward_selected_subset_in_order():
    simple = load_templates("imagenet7")
    assert simple == [
        "itap of a {}.",
        "a bad photo of the {}.",
        "a origami {}.",
        "a photo of the large {}.",
        "a {} in a video game.",
        "art of the {}.",
        "a photo of the small {}.",
    ]
    assert set(simple) <= set(load_templates("imagenet80"))


def test_load_from_path_skips_blank_lines_and_comments(tmp_path: Path):
    path = tmp_path / "mine.txt"
    path.write_text("# my set\n\na {} on a table.\n  the {}.  \n")
    assert load_templates(str(path)) == ["a {} on a table.", "the {}."]
    assert load_templates(path) == ["a {} on a table.", "the {}."]


@pytest.mark.parametrize("bad", ["a photo.", "a {} and a {}.", "a {0} photo.", "a {} photo {x}."])
def test_bad_template_names_file_and_line(tmp_path: Path, bad: str):
    path = tmp_path / "bad.txt"
    path.write_text(f"a photo of a {{}}.\n\n{bad}\n")
    with pytest.raises(ValueError, match=r"bad\.txt, line 3"):
        load_templates(str(path))


def test_empty_file_is_an_error(tmp_path: Path):
    path = tmp_path / "empty.txt"
    path.write_text("# nothing\n")
    with pytest.raises(ValueError, match="no templates"):
        load_templates(str(path))


def test_unknown_name_lists_known_sets():
    with pytest.raises(ValueError, match=r"imagenet7.*imagenet80"):
        load_templates("imagenet81")
