"""Typed configuration for every training command, loaded from YAML with ``key=value`` overrides.

Unknown keys and bad values fail fast with the offending dotted key named. The user's ``key=value``
overrides are parsed once, in :func:`load_config`; what code sets is typed (``defaults`` there, or
:func:`with_updates` on a loaded config), never written as ``key=value`` strings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

LitMode = Literal["Lu", "LU", "Uu", "UU", "uu"]
C = TypeVar("C", bound=BaseModel)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageTowerConfig(Strict):
    """``builtin``: the small demo CNN. ``timm``: any timm model name. ``hf``: a transformers vision model."""

    kind: Literal["builtin", "timm", "hf"] = "builtin"
    name: str = "demo-cnn"
    weights: Path | None = Field(
        default=None,
        description="local weights (safetensors/pt); for timm, else the hub on the user's machine",
    )
    pretrained: bool = Field(
        default=True, description="load pretrained weights (timm/hf); False = random init"
    )
    image_size: int = 64
    width: int = 64
    pooling: Literal["avg", "avgmax"] = Field(
        default="avg",
        description="builtin: global average pooling, or average and max side by side (twice the width)",
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra constructor arguments (timm)")


class TextTowerConfig(Strict):
    """``scratch``: a small transformer with its own tokenizer. ``hf``: a BERT-style transformers encoder."""

    kind: Literal["scratch", "hf"] = "scratch"
    name: str = "scratch"
    context_length: int = 16
    width: int = 128
    layers: int = 2
    heads: int = 4
    vocab_size: int = 1000
    dropout: float = 0.0
    pooling: Literal["mean", "cls"] = "mean"


class ModelConfig(Strict):
    mode: LitMode = "Lu"
    embed_dim: int = 128
    image_head: bool = False
    image: ImageTowerConfig = Field(default_factory=ImageTowerConfig)
    text: TextTowerConfig = Field(default_factory=TextTowerConfig)


class LossConfig(Strict):
    kind: Literal["softmax", "sigmoid"] = "softmax"


class SyntheticDataConfig(Strict):
    image_size: int = 64
    seed: int = 0
    version: Literal[1, 2] = Field(
        default=1, description="the synthetic world's render version (2: the harder, wider world)"
    )
    train_size: int = 20000
    eval_size: int = 2048
    eval_seeds: int = Field(
        default=1, ge=1, description="final evaluation on this many world seeds (figures are their means)"
    )
    prerender: bool = Field(
        default=False,
        description="render the training pairs once into memory (uint8) instead of on every read: for "
        "unlocked image towers, which read each image once per epoch",
    )


class DataConfig(Strict):
    """One source of image-text pairs: ``synthetic``, a CSV/JSONL ``manifest``, or ``webdataset`` shards."""

    kind: Literal["synthetic", "manifest", "webdataset"] = "synthetic"
    path: str | None = Field(
        default=None,
        description="manifest file; or WebDataset shards: a brace pattern like data-{000..099}.tar, several "
        "joined by '::', or a .txt shard list (one shard or pattern per line, '#' comments, paths relative "
        "to the list)",
    )
    image_root: Path | None = None
    image_key: str = "image"
    caption_key: str = "caption"
    augment: bool = False
    on_error: Literal["raise", "skip"] = "raise"
    workers: int = 0
    holdout: float | None = Field(
        default=None,
        ge=0.0,
        lt=1.0,
        description="fraction of images kept out of training (chosen by a hash of the image path, or of "
        "the WebDataset sample key) for evaluation and export checks; default: 0.05 for manifest and "
        "WebDataset data unless evaluation.retrieval names a separate set, else 0",
    )
    synthetic: SyntheticDataConfig = Field(default_factory=SyntheticDataConfig)


DEFAULT_HOLDOUT = 0.05


class EvaluationConfig(Strict):
    """Evaluation sets on the user's data, used by ``evaluate``, ``export`` and ``retrain``.

    ``zero_shot``: a labelled set, an image folder per class (``root/<class>/*.jpg``) or a CSV/JSONL of
    image and label. ``retrieval``: held-out image-text pairs, a manifest or WebDataset shards (without
    it, the training data's held-out split is used).
    """

    zero_shot: str | None = None
    classes: Path | None = Field(
        default=None,
        description="class file: one class per line, 'label' or 'label<TAB>name used in prompts'",
    )
    image_key: str = "image"
    label_key: str = "label"
    retrieval: str | None = None
    max_images: int = Field(default=0, ge=0, description="evaluate at most this many images per set (0: all)")


class OptimConfig(Strict):
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 1.0
    betas: tuple[float, float] = (0.9, 0.98)


class TrainConfig(Strict):
    out_dir: Path = Path("runs/lit")
    seed: int = 0
    steps: int = 1000
    batch_size: int = Field(default=256, description="global batch size per optimiser step")
    accumulation: int = 1
    precision: Literal["fp32", "bf16"] = "fp32"
    eval_every: int = 0
    checkpoint_every: int = 500
    log_every: int = 20
    feature_cache: bool = True
    cache_dir: Path = Path(".cache/lit-features")
    templates: str = "demo"
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)

    @model_validator(mode="after")
    def _resolve_holdout(self) -> TrainConfig:
        """Fix ``data.holdout`` to a number, so the saved config names the split that was trained on."""
        if self.data.holdout is None:
            separate = self.evaluation.retrieval is not None
            self.data.holdout = 0.0 if self.data.kind == "synthetic" or separate else DEFAULT_HOLDOUT
        return self

    @field_validator("batch_size")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be positive")
        return value


class PretrainConfig(Strict):
    """Supervised pretraining of the built-in tower on synthetic factor labels (stands in for ImageNet)."""

    out: Path = Path("runs/demo/tower.safetensors")
    seed: int = 0
    steps: int = 600
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    train_size: int = 12000
    workers: int = Field(default=2, ge=1, description="processes that render the pretraining images")
    image: ImageTowerConfig = Field(default_factory=ImageTowerConfig)
    data: SyntheticDataConfig = Field(default_factory=SyntheticDataConfig)


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key and how to fix it."""


def _assign(nested: dict[str, Any], key: str, value: Any, what: str) -> None:
    """Set the dotted ``key`` in ``nested`` (``a.b`` -> ``nested["a"]["b"]``)."""
    node = nested
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{what} conflicts with an earlier value of {part!r}")
    node[leaf] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into a nested dict; values are parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value (example: optim.lr=3e-4)")
        _assign(nested, key, yaml.safe_load(raw) if raw else "", f"override {item!r}")
    return nested


def nest(updates: Mapping[str, Any]) -> dict[str, Any]:
    """Turn typed dotted-key values (``{"model.image.weights": path}``) into a nested dict."""
    nested: dict[str, Any] = {}
    for key, value in updates.items():
        if not key or "" in key.split("."):
            raise ConfigError(f"config key {key!r} is not a dotted key (example: model.image.weights)")
        _assign(nested, key, value, f"config key {key!r}")
    return nested


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _validate(cls: type[C], raw: dict[str, Any], where: str = "") -> C:
    """``cls`` validated from ``raw``; a ConfigError naming every offending dotted key otherwise."""
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "<root>"
            hint = " (unknown key: check its spelling)" if err["type"] == "extra_forbidden" else ""
            problems.append(f"{key}: {err['msg']}{hint}")
        raise ConfigError(f"invalid config{where}:\n  " + "\n  ".join(problems)) from None


def load_config(
    cls: type[C],
    path: Path | None,
    overrides: Sequence[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> C:
    """Load ``cls`` from a YAML file (optional) plus overrides, naming the offending key on error.

    ``defaults`` are typed values the calling code sets (dotted keys, e.g. ``{"out_dir": out}``): they
    replace the file's and give way to the user's ``key=value`` overrides. Values the code must set
    whatever the user says go through :func:`with_updates` afterwards.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(raw).__name__}")
    raw = _merge(_merge(raw, nest(defaults or {})), parse_overrides(list(overrides)))
    return _validate(cls, raw, f" in {path}" if path else "")


def with_updates(cfg: C, updates: Mapping[str, Any]) -> C:
    """A copy of ``cfg`` with typed values set at dotted keys, validated again as a whole.

    Unlike ``cfg.model_copy(update=...)``, a wrong key or value raises :class:`ConfigError` naming it.
    Values the first validation derived from others (``TrainConfig``'s ``data.holdout``) are kept: give
    the keys they depend on to :func:`load_config` instead.
    """
    raw = _merge(cfg.model_dump(), nest(updates))
    return _validate(type(cfg), raw, " after setting " + ", ".join(updates))
