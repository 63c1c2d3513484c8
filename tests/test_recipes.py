"""Recipes compose typed configs: ``load_config`` once (file, typed defaults, the user's ``key=value``
overrides), then typed, validated updates; the configs equal what the former ``key=value`` route gave."""

from pathlib import Path

import pytest

import training.retrain
from training.ablation import ABLATION_ROWS
from training.config import ConfigError, PretrainConfig, TrainConfig, load_config, with_updates
from training.recipes import builtin_config, demo_config, demo_pretrain_config
from training.retrain import DRY_RUN_CONFIG, RetrainOptions, training_config

DEMO = builtin_config("demo.yaml")
DEMO_PRETRAIN = builtin_config("demo_pretrain.yaml")


def test_a_typed_update_is_validated_and_names_the_key() -> None:
    cfg = load_config(TrainConfig, DEMO)
    updated = with_updates(cfg, {"out_dir": Path("/runs/x"), "model.image.weights": Path("/t.safetensors")})
    assert updated.out_dir == Path("/runs/x") and updated.model.image.weights == Path("/t.safetensors")
    assert updated.model.image.width == cfg.model.image.width  # the rest of the nested model is kept
    assert cfg.out_dir == Path("runs/demo/lit")  # the original is not changed

    assert cfg.model_copy(update={"steps": "many"}).steps == "many"  # model_copy alone checks nothing
    with pytest.raises(ConfigError, match=r"steps: Input should be a valid integer"):
        with_updates(cfg, {"steps": "many"})
    with pytest.raises(ConfigError, match=r"model\.mode"):
        with_updates(cfg, {"model.mode": "LL"})
    with pytest.raises(ConfigError, match=r"batch_size: Value error, must be positive"):
        with_updates(cfg, {"batch_size": 0})
    with pytest.raises(ConfigError, match=r"model\.imag.*unknown key"):
        with_updates(cfg, {"model.imag.weights": Path("/t")})
    with pytest.raises(ConfigError, match="not a dotted key"):
        with_updates(cfg, {"model..mode": "LU"})


def test_typed_defaults_replace_the_file_and_give_way_to_the_overrides() -> None:
    defaults = {"steps": 7, "optim.lr": 0.5, "model.image.weights": Path("/t")}
    cfg = load_config(TrainConfig, DEMO, ["optim.lr=3e-4"], defaults)
    assert (cfg.steps, cfg.optim.lr, cfg.model.image.weights) == (7, 3e-4, Path("/t"))
    assert cfg.optim.weight_decay == 1e-4 and cfg.model.image.width == 32  # the file's other values stay
    with pytest.raises(ConfigError, match=r"steps"):
        load_config(TrainConfig, DEMO, [], {"steps": "x"})


def test_demo_and_ablation_configs_equal_the_former_string_route(tmp_path: Path) -> None:
    tower = tmp_path / "tower.safetensors"
    user = ["steps=3", "model.text.width=32", "cache_dir=/tmp/c"]
    forced = [f"out_dir={tmp_path / 'lit'}", f"model.image.weights={tower}"]
    former = load_config(TrainConfig, DEMO, [*forced, *user])
    demo = demo_config(tmp_path, user)
    assert demo == former
    assert (demo.out_dir, demo.model.image.weights, demo.steps) == (tmp_path / "lit", tower, 3)
    for row, row_overrides in ABLATION_ROWS.items():  # a row is the demo plus its overrides; the user's win
        ablation = demo_config(tmp_path, [*row_overrides, *user])
        assert ablation == load_config(
            TrainConfig, DEMO, [f"out_dir={tmp_path / 'lit'}", *forced[1:], *row_overrides, *user]
        )
        assert ablation.model.mode == {"LU": "LU", "Uu": "Uu", "uu": "uu"}.get(row, "Lu")
    # as before, the user's overrides win over what the recipe sets
    assert demo_config(tmp_path, ["out_dir=/elsewhere"]).out_dir == Path("/elsewhere")

    pretrain = demo_pretrain_config(tower, ["steps=3", "out=/ignored"])
    assert pretrain == load_config(PretrainConfig, DEMO_PRETRAIN, ["steps=3", "out=/ignored", f"out={tower}"])
    assert (pretrain.out, pretrain.steps) == (tower, 3)  # the tower file is the recipe's, whatever is asked


def test_retrain_dry_run_configs_equal_the_former_string_route(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pretrained: list[PretrainConfig] = []
    monkeypatch.setattr(training.retrain, "pretrain_tower", lambda cfg, progress: pretrained.append(cfg))
    options = RetrainOptions(dry_run=True, overrides=("pretrain.steps=7", "steps=9"), progress=False)
    timings: dict[str, float] = {}
    cfg = training_config(options, tmp_path, timings)

    tower = tmp_path / "tower.safetensors"
    forced = [f"out_dir={tmp_path / 'lit'}", f"model.image.weights={tower}"]
    former = load_config(TrainConfig, DRY_RUN_CONFIG, [f"cache_dir={tmp_path / 'cache'}", "steps=9", *forced])
    assert cfg == former
    assert (cfg.out_dir, cfg.cache_dir, cfg.model.image.weights, cfg.steps) == (
        tmp_path / "lit",
        tmp_path / "cache",
        tower,
        9,
    )
    # the tower the LiT config describes (size, width, pooling) on its world (image size, version)
    sizes = [
        "image.image_size=32",
        "image.width=16",
        "image.pooling=avg",
        "data.image_size=32",
        "data.version=1",
    ]
    budget = ["steps=1200", "batch_size=64", "train_size=8000"]
    former_pretrain = load_config(PretrainConfig, DEMO_PRETRAIN, [*sizes, *budget, "steps=7", f"out={tower}"])
    assert pretrained == [former_pretrain]
    assert (pretrained[0].steps, pretrained[0].batch_size, pretrained[0].image.width) == (7, 64, 16)
    assert "pretrain_tower" in timings

    # a real run: no dry-run budget or cache folder; the user's cache_dir and the run folder as before
    pretrained.clear()
    real = RetrainOptions(config=DRY_RUN_CONFIG, overrides=("cache_dir=/tmp/c",), progress=False)
    cfg = training_config(real, tmp_path / "real", {})
    weights = tmp_path / "real" / "tower.safetensors"
    forced = [f"out_dir={tmp_path / 'real' / 'lit'}", f"model.image.weights={weights}"]
    assert cfg == load_config(TrainConfig, DRY_RUN_CONFIG, ["cache_dir=/tmp/c", *forced])
    assert pretrained == [load_config(PretrainConfig, DEMO_PRETRAIN, [*sizes, f"out={weights}"])]
