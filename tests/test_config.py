from pathlib import Path

import pytest

from training.config import ConfigError, PretrainConfig, TrainConfig, load_config, parse_overrides
from training.recipes import builtin_config


def test_overrides_are_nested_and_typed() -> None:
    assert parse_overrides(["a.b=1", "a.c=x", "d=true"]) == {"a": {"b": 1, "c": "x"}, "d": True}
    cfg = load_config(TrainConfig, None, ["model.mode=LU", "optim.lr=3e-4", "loss.kind=sigmoid"])
    assert (cfg.model.mode, cfg.optim.lr, cfg.loss.kind) == ("LU", 3e-4, "sigmoid")


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"model\.text\.widht.*unknown key"):
        load_config(TrainConfig, None, ["model.text.widht=3"])


def test_bad_value_is_named() -> None:
    with pytest.raises(ConfigError, match=r"model\.mode"):
        load_config(TrainConfig, None, ["model.mode=LL"])
    with pytest.raises(ConfigError, match=r"batch_size"):
        load_config(TrainConfig, None, ["batch_size=0"])


def test_bad_override_syntax_and_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="key=value"):
        load_config(TrainConfig, None, ["steps"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(TrainConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(TrainConfig, bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(TrainConfig, listing)


def test_shipped_configs_are_valid() -> None:
    demo = load_config(TrainConfig, builtin_config("demo.yaml"))
    assert demo.model.mode == "Lu" and demo.data.kind == "synthetic"
    load_config(PretrainConfig, builtin_config("demo_pretrain.yaml"))
