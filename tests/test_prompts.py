"""One rule for templates and one way to expand and ensemble prompts, for training and serving alike."""

import numpy as np
import pytest

from lit_bundle.prompts import TemplateError, check_templates, ensemble, expand_prompts, template_problem
from service.label_store import LabelSet
from training.templates import parse_templates

BAD = ["no placeholder", "two {} and {}", "stray { brace {}", "{0} positional {}", "", "   "]
GOOD = ["a photo of a {}.", "{}", "the {} here"]


@pytest.mark.parametrize("template", BAD)
def test_every_consumer_refuses_the_same_templates(template: str) -> None:
    assert template_problem(template) is not None
    with pytest.raises(TemplateError):
        check_templates([GOOD[0], template])
    if template.strip():  # a training file skips blank lines
        with pytest.raises(TemplateError, match="line 1"):
            parse_templates(template, "t.txt")
    with pytest.raises(ValueError):
        LabelSet(name="s", labels=["cat"], templates=[template])


@pytest.mark.parametrize("template", GOOD)
def test_every_consumer_takes_the_same_templates(template: str) -> None:
    assert template_problem(template) is None
    assert check_templates([template]) == (template,)
    assert parse_templates(template, "t.txt") == [template]
    assert LabelSet(name="s", labels=["cat"], templates=[template]).templates == [template]


def test_expand_prompts_is_label_major_and_literal() -> None:
    prompts = expand_prompts(["cat", "{0.__class__}"], ["a {}.", "the {} here"])
    assert prompts == ["a cat.", "the cat here", "a {0.__class__}.", "the {0.__class__} here"]
    with pytest.raises(TemplateError, match="at least one"):
        expand_prompts(["cat"], [])


def test_ensemble_matches_hand_computation() -> None:
    # 2 labels x 2 templates, label-major rows, already unit length.
    rows = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.6, 0.8]], dtype=np.float32)
    out = ensemble(rows, labels_count=2, templates_count=2)
    s = 1 / np.sqrt(2)
    np.testing.assert_allclose(out, [[s, s], [0.6, 0.8]], rtol=1e-6)
    assert out.dtype == np.float32
    # Rows are (re)normalised before the mean: scaling one template's output changes nothing.
    scaled = rows.copy()
    scaled[0] *= 5
    np.testing.assert_allclose(ensemble(scaled, 2, 2), out, rtol=1e-6)
    with pytest.raises(ValueError, match="2 labels x 3 templates"):
        ensemble(rows, 2, 3)
