"""Generated ``config.pbtxt`` files parse with Triton's own ModelConfig protobuf and match the manifest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from lit_bundle.atomic import write_atomic
from lit_bundle.manifest import (
    BundleError,
    EncoderSpec,
    Manifest,
    PrecisionGate,
    TensorSpec,
    TextSpec,
    Variant,
    manifest_path,
    read_manifest,
    sha256_file,
)
from lit_bundle.preprocess import PreprocessSpec
from lit_bundle.repository import active_version, load_bundle, promote, write_missing_configs
from lit_bundle.triton import (
    TritonOptions,
    active_versions,
    bundle_configs,
    check_config,
    encoder_config,
    parse_config,
    promoted_config,
    write_config,
)
from lit_bundle.triton_files import served_filename

pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_REPOSITORY = REPO_ROOT / "model_repository"

IMAGE = EncoderSpec(
    triton_name="demo_image",
    file="demo_image/1/model.onnx",
    inputs=(TensorSpec(name="pixels", dtype="uint8", shape=(-1, 64, 64, 3)),),
    outputs=(TensorSpec(name="embedding", dtype="float32", shape=(-1, 128)),),
)
TEXT = EncoderSpec(
    triton_name="demo_text",
    file="demo_text/1/model.onnx",
    inputs=(
        TensorSpec(name="input_ids", dtype="int64", shape=(-1, 16)),
        TensorSpec(name="attention_mask", dtype="int64", shape=(-1, 16)),
    ),
    outputs=(TensorSpec(name="embedding", dtype="float32", shape=(-1, 128)),),
)
OPTION_SETS = {
    "default": TritonOptions(),
    "cpu": TritonOptions(instance_kind="cpu", instance_count=2, max_batch_size=8, preferred_batch_sizes=(4,)),
    "tensorrt": TritonOptions(tensorrt=True, max_queue_size=256, max_queue_delay_us=500),
    "tensorrt_fp32_nocache": TritonOptions(tensorrt=True, tensorrt_fp16=False, tensorrt_cache_dir=None),
    "warmup": TritonOptions(warmup=True, preferred_batch_sizes=()),
    "int8": TritonOptions(instance_kind="cpu", precision="int8"),
}


# The TensorRT accelerator parameters the backend parses (onnxruntime_backend src/onnxruntime.cc and README).
TRT_PARAMETERS = {
    "precision_mode",
    "max_workspace_size_bytes",
    "trt_engine_cache_enable",
    "trt_engine_cache_path",
    "trt_timing_cache_enable",
    "trt_timing_cache_path",
    "trt_profile_min_shapes",
    "trt_profile_opt_shapes",
    "trt_profile_max_shapes",
}


def _params(config) -> dict[str, str]:
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    return dict(accelerator.parameters)


@pytest.mark.parametrize("encoder", [IMAGE, TEXT], ids=["image", "text"])
@pytest.mark.parametrize("name", list(OPTION_SETS))
def test_generated_config_round_trips(encoder: EncoderSpec, name: str) -> None:
    options = OPTION_SETS[name]
    text = encoder_config(encoder, [3], options)
    assert text.startswith("# Generated") and "lit-train promote demo <version>" in text
    assert text == encoder_config(encoder, [3], options), "output must be deterministic"
    config = parse_config(text)
    check_config(text, encoder)

    assert config.name == encoder.triton_name and config.backend == "onnxruntime"
    assert config.default_model_filename == ("model.int8.onnx" if options.precision == "int8" else "")
    assert config.max_batch_size == options.max_batch_size
    for declared, spec in zip(
        [*config.input, *config.output], [*encoder.inputs, *encoder.outputs], strict=True
    ):
        assert declared.name == spec.name
        assert list(declared.dims) == list(spec.shape[1:])
    assert list(config.dynamic_batching.preferred_batch_size) == list(options.preferred_batch_sizes)
    assert config.dynamic_batching.max_queue_delay_microseconds == options.max_queue_delay_us
    (group,) = config.instance_group
    assert group.kind == getattr(pb2.ModelInstanceGroup, f"KIND_{options.instance_kind.upper()}")
    assert group.count == options.instance_count
    assert config.version_policy.WhichOneof("policy_choice") == "specific"
    assert list(config.version_policy.specific.versions) == [3]

    queue = config.dynamic_batching.default_queue_policy
    assert config.dynamic_batching.HasField("default_queue_policy") == (options.max_queue_size > 0)
    assert queue.max_queue_size == options.max_queue_size

    assert config.optimization.HasField("execution_accelerators") == options.tensorrt
    if options.tensorrt:
        params = _params(config)
        assert params["precision_mode"] == ("FP16" if options.tensorrt_fp16 else "FP32")
        assert params["max_workspace_size_bytes"] == str(options.tensorrt_workspace_bytes)
        caches = (
            "trt_engine_cache_enable",
            "trt_engine_cache_path",
            "trt_timing_cache_enable",
            "trt_timing_cache_path",
        )
        if options.tensorrt_cache_dir is None:
            assert not set(caches) & set(params)
        else:  # engines and TensorRT's layer timings in the same persistent folder
            assert [params[key] for key in caches] == ["1", options.tensorrt_cache_dir] * 2
        # Keys Triton's ONNX Runtime backend accepts for its TensorRT accelerator (any other fails the load).
        assert set(params) <= TRT_PARAMETERS
        first = encoder.inputs[0]
        dims = "x".join(map(str, first.shape[1:]))
        assert params["trt_profile_max_shapes"].startswith(f"{first.name}:{options.max_batch_size}x{dims}")
        assert params["trt_profile_min_shapes"].startswith(f"{first.name}:1x{dims}")

    assert len(config.model_warmup) == (2 if options.warmup else 0)
    for warm in config.model_warmup:
        assert set(warm.inputs) == {t.name for t in encoder.inputs}


def test_types_map_to_triton() -> None:
    config = parse_config(encoder_config(IMAGE, [1], TritonOptions()))
    assert config.input[0].data_type == pb2.TYPE_UINT8
    assert config.output[0].data_type == pb2.TYPE_FP32
    config = parse_config(encoder_config(TEXT, [1], TritonOptions()))
    assert [t.data_type for t in config.input] == [pb2.TYPE_INT64, pb2.TYPE_INT64]
    half = IMAGE.model_copy(
        update={"outputs": (TensorSpec(name="embedding", dtype="float16", shape=(-1, 128)),)}
    )
    assert parse_config(encoder_config(half, [1], TritonOptions())).output[0].data_type == pb2.TYPE_FP16


def test_several_versions_are_sorted_and_deduplicated() -> None:
    text = encoder_config(IMAGE, [5, 2, 5], TritonOptions())
    assert active_versions(text) == [2, 5]
    with pytest.raises(ValueError, match="positive"):
        encoder_config(IMAGE, [], TritonOptions())
    with pytest.raises(ValueError, match="positive"):
        encoder_config(IMAGE, [0], TritonOptions())


def test_dynamic_sequence_axis_is_bounded_by_the_context_length() -> None:
    """A text encoder with a dynamic sequence axis: dims [-1]; warm-up batches at the context length and
    TensorRT profiles from 1 token to it, so one engine covers every prompt length."""
    dynamic = TEXT.model_copy(
        update={"inputs": tuple(t.model_copy(update={"shape": (-1, -1)}) for t in TEXT.inputs)}
    )
    options = TritonOptions(tensorrt=True, warmup=True, max_batch_size=32, preferred_batch_sizes=(8,))
    text = encoder_config(dynamic, [1], options, sequence_length=77)
    check_config(text, dynamic)
    config = parse_config(text)
    assert [list(t.dims) for t in config.input] == [[-1], [-1]]
    assert {tuple(v.dims) for w in config.model_warmup for v in w.inputs.values()} == {(77,)}
    params = _params(config)
    assert params["trt_profile_min_shapes"] == "input_ids:1x1,attention_mask:1x1"
    assert params["trt_profile_opt_shapes"] == "input_ids:8x77,attention_mask:8x77"
    assert params["trt_profile_max_shapes"] == "input_ids:32x77,attention_mask:32x77"
    with pytest.raises(ValueError, match="sequence_length"):
        encoder_config(dynamic, [1], TritonOptions(warmup=True))


def test_encoder_without_batch_axis_is_refused() -> None:
    fixed = IMAGE.model_copy(
        update={"inputs": (TensorSpec(name="pixels", dtype="uint8", shape=(1, 64, 64, 3)),)}
    )
    with pytest.raises(ValueError, match="batch axis"):
        encoder_config(fixed, [1], TritonOptions())


def _tamper(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('name: "pixels"', 'name: "image"', r"input tensors are \['image'\].*\['pixels'\]"),
        ("data_type: TYPE_UINT8", "data_type: TYPE_FP32", r"input 'pixels' has data_type TYPE_FP32.*uint8"),
        ("dims: [64, 64, 3]", "dims: [3, 64, 64]", r"input 'pixels' has dims \[3, 64, 64\].*\[64, 64, 3\]"),
        ("dims: [128]", "dims: [256]", r"output 'embedding' has dims \[256\].*\[128\]"),
        ("max_batch_size: 64", "max_batch_size: 0", "max_batch_size is 0"),
        ('backend: "onnxruntime"', 'backend: "pytorch"', "backend is 'pytorch'"),
        ('name: "demo_image"', 'name: "other_image"', "'other_image'.*'demo_image'"),
    ],
)
def test_check_config_names_the_mismatch(old: str, new: str, message: str) -> None:
    text = _tamper(encoder_config(IMAGE, [1], TritonOptions()), old, new)
    with pytest.raises(ValueError, match=message) as info:
        check_config(text, IMAGE)
    assert "demo_image" in str(info.value)


def test_check_config_catches_text_encoder_mismatches() -> None:
    text = encoder_config(TEXT, [1], TritonOptions())
    with pytest.raises(ValueError, match="'attention_mask' has data_type TYPE_INT32"):
        last_input = "TYPE_INT64\n    dims: [16]\n  }\n]"
        check_config(_tamper(text, last_input, last_input.replace("INT64", "INT32")), TEXT)
    image_as_text = IMAGE.model_copy(update={"triton_name": "demo_text"})
    with pytest.raises(ValueError, match="input tensors"):
        check_config(encoder_config(image_as_text, [1], TritonOptions()), TEXT)


def test_invalid_text_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a valid Triton ModelConfig"):
        parse_config('name: "x"\nmax_batch_size: "many"\n')
    with pytest.raises(ValueError, match="not a valid Triton ModelConfig"):
        parse_config("no_such_field: 1\n")


def _without_tritonclient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tritonclient.grpc.model_config_pb2", None)
    with pytest.raises(ImportError):
        parse_config("")


@pytest.mark.parametrize("options", [TritonOptions(), OPTION_SETS["tensorrt"], OPTION_SETS["warmup"]])
def test_active_versions_protobuf_and_fallback_agree(
    monkeypatch: pytest.MonkeyPatch, options: TritonOptions
) -> None:
    texts = [encoder_config(enc, versions, options) for enc in (IMAGE, TEXT) for versions in ([7], [2, 9])]
    via_protobuf = [active_versions(text) for text in texts]
    assert via_protobuf == [[7], [2, 9], [7], [2, 9]]
    _without_tritonclient(monkeypatch)
    assert [active_versions(text) for text in texts] == via_protobuf


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version_policy { specific { versions: 4 versions: 2 } }", [2, 4]),
        ("# a comment { with braces\nversion_policy: < specific: < versions: [ 3 ] > >", [3]),
        ('name: "has } brace # and hash"\nversion_policy { specific { versions: [1, 12] } }', [1, 12]),
        ("version_policy { latest { num_versions: 2 } }", []),
        ('name: "no policy"\nmax_batch_size: 8', []),
        ("version_policy { specific { versions: [] } }", []),
    ],
)
def test_active_versions_hand_written(monkeypatch: pytest.MonkeyPatch, text: str, expected: list) -> None:
    assert active_versions(text) == expected
    _without_tritonclient(monkeypatch)
    assert active_versions(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "version_policy { specific { versions: [1, 2 } }",
        "version_policy { specific { versions: [x] } }",
        'name: "unterminated',
        "version_policy { specific {",
    ],
)
def test_fallback_rejects_malformed_text(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    _without_tritonclient(monkeypatch)
    with pytest.raises(ValueError):
        active_versions(text)


def test_options_validation_errors_are_clear() -> None:
    with pytest.raises(ValidationError, match=r"sizes \[8, 16, 32\].*max_batch_size=16.*\[32\]"):
        TritonOptions(max_batch_size=16)
    with pytest.raises(ValidationError, match="between 1 and"):
        TritonOptions(preferred_batch_sizes=(0, 4))
    with pytest.raises(ValidationError, match="duplicates"):
        TritonOptions(preferred_batch_sizes=(4, 4))
    with pytest.raises(ValidationError, match="instance_kind='gpu'"):
        TritonOptions(tensorrt=True, instance_kind="cpu")
    with pytest.raises(ValidationError, match="absolute path"):
        TritonOptions(tensorrt_cache_dir="relative/cache")
    for wrong in ({}, {"instance_kind": "cpu", "tensorrt": True}):  # GPU instances, or TensorRT
        with pytest.raises(ValidationError, match="precision='int8' needs instance_kind='cpu'") as e:
            TritonOptions(precision="int8", **wrong)
        assert "gate on ONNX Runtime's CPU provider" in str(e.value)
        assert "--instance-kind cpu" in str(e.value) and "--triton-precision fp32" in str(e.value)
    with pytest.raises(ValidationError, match="'fp32' or 'int8'"):
        TritonOptions(instance_kind="cpu", precision="bf16")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="max_batch_size"):
        TritonOptions(max_batch_size=0)
    with pytest.raises(ValidationError, match="extra"):
        TritonOptions(max_batch=4)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        TritonOptions().max_batch_size = 2  # type: ignore[misc]


def test_write_config_is_atomic_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "demo_image" / "config.pbtxt"
    write_config(path, encoder_config(IMAGE, [1], TritonOptions()))
    write_config(path, encoder_config(IMAGE, [2], TritonOptions()))
    assert active_versions(path.read_text()) == [2]
    assert [p.name for p in path.parent.iterdir()] == ["config.pbtxt"]


def test_import_needs_neither_torch_nor_tritonclient() -> None:
    code = (
        "import sys, lit_bundle.triton; "
        "bad = [m for m in ('torch', 'tritonclient') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT, timeout=60)


def _repository_configs() -> list:
    configs = sorted(MODEL_REPOSITORY.glob("*/config.pbtxt")) if MODEL_REPOSITORY.is_dir() else []
    if not configs:
        reason = f"no config.pbtxt under {MODEL_REPOSITORY} yet"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason))]
    return [pytest.param(path, id=path.parent.name) for path in configs]


def _check_repository_config(path: Path) -> None:
    """Triton accepts ``path`` and, where the served version's manifest is present, it matches it."""
    text = path.read_text()
    config = parse_config(text)
    model = path.parent.name
    assert config.name == model, f"{path}: name {config.name!r} differs from its folder {model!r}"
    repository, bundle = path.parent.parent, model.removesuffix("_image").removesuffix("_text")
    for version in active_versions(text):
        manifest_file = manifest_path(repository, bundle, version)
        if manifest_file.is_file():
            manifest = read_manifest(manifest_file)
            encoder = manifest.image_encoder if model.endswith("_image") else manifest.text_encoder
            check_config(text, encoder)


@pytest.mark.parametrize("path", _repository_configs())
def test_repository_configs_are_valid(path: Path) -> None:
    _check_repository_config(path)


def test_repository_check_uses_the_manifest(tmp_path: Path) -> None:
    manifest = Manifest(
        name="demo",
        version=2,
        embed_dim=128,
        loss="softmax",
        logit_scale=100.0,
        preprocess=PreprocessSpec(size=64),
        image_encoder=IMAGE,
        text_encoder=TEXT,
        text=TextSpec(tokenizer="demo_text/2/tokenizer.json", context_length=16),
    )
    write_atomic(manifest_path(tmp_path, "demo", 2), manifest.model_dump_json())
    for encoder in (IMAGE, TEXT):
        write_config(
            tmp_path / encoder.triton_name / "config.pbtxt", encoder_config(encoder, [2], TritonOptions())
        )
        _check_repository_config(tmp_path / encoder.triton_name / "config.pbtxt")
    stale = tmp_path / "demo_text" / "config.pbtxt"
    stale.write_text(stale.read_text().replace("dims: [16]", "dims: [77]"))
    with pytest.raises(ValueError, match="'input_ids' has dims \\[77\\]"):
        _check_repository_config(stale)


# Which file Triton loads: model.onnx or the int8 variant (TritonOptions.precision) -------------------------
INT8 = TritonOptions(instance_kind="cpu", precision="int8")
INT8_LINE = 'default_model_filename: "model.int8.onnx"'


def test_int8_config_names_the_variant_file() -> None:
    text = encoder_config(IMAGE, [3], INT8)
    assert text.count(INT8_LINE) == 1 and text.index(INT8_LINE) < text.index("max_batch_size")
    check_config(text, IMAGE)
    assert parse_config(text).default_model_filename == "model.int8.onnx"
    assert served_filename(text) == "model.int8.onnx"
    fp32 = encoder_config(IMAGE, [3], TritonOptions(instance_kind="cpu"))
    assert "default_model_filename" not in fp32 and served_filename(fp32) == "model.onnx"
    assert text.replace(INT8_LINE + "\n", "") == fp32  # nothing else differs


def version_with_files(repository: Path, version: int, int8: bool) -> Manifest:
    """A complete version of bundle ``demo`` (placeholder bytes: promotion never opens the models), with a
    gated int8 variant when ``int8``."""
    image = IMAGE.model_copy(update={"file": f"demo_image/{version}/model.onnx"})
    text = TEXT.model_copy(update={"file": f"demo_text/{version}/model.onnx"})
    tokenizer = f"demo_text/{version}/tokenizer.json"
    files = [image.file, text.file, tokenizer]
    variants = ()
    if int8:
        gate = PrecisionGate(
            data="test", images=64, classes=8, prompts=8, min_cosine_image=0.999, min_cosine_text=0.999,
            top1_agreement=1.0, accuracy_fp32=1.0, accuracy=1.0, runs_on="test",
        )  # fmt: skip
        quantised = [f.replace("model.onnx", "model.int8.onnx") for f in (image.file, text.file)]
        variants = (
            Variant(
                precision="int8", image_file=quantised[0], text_file=quantised[1], method="test", gate=gate
            ),
        )
        files += quantised
    for relative in files:
        write_atomic(repository / relative, f"{relative} {version}".encode())
    manifest = Manifest(
        name="demo", version=version, embed_dim=128, loss="softmax", logit_scale=100.0,
        preprocess=PreprocessSpec(size=64), image_encoder=image, text_encoder=text,
        text=TextSpec(tokenizer=tokenizer, context_length=16), variants=variants,
        files={relative: sha256_file(repository / relative) for relative in files},
    )  # fmt: skip
    write_atomic(manifest_path(repository, "demo", version), manifest.model_dump_json(indent=1))
    return manifest


def _configs(repository: Path) -> dict[str, str]:
    return {model: (repository / model / "config.pbtxt").read_text() for model in ("demo_image", "demo_text")}


@pytest.fixture
def variant_repository(tmp_path: Path) -> Path:
    """``demo`` v1 (no variant) and v2 (an int8 variant); v2 served from model.int8.onnx."""
    repository = tmp_path / "repo"
    version_with_files(repository, 1, int8=False)
    version_with_files(repository, 2, int8=True)
    promote(repository, "demo", 2, INT8)
    return repository


def test_promotion_to_int8_writes_the_variant_into_both_configs(variant_repository: Path) -> None:
    manifest = load_bundle(variant_repository).manifest
    assert manifest.version == 2
    assert _configs(variant_repository) == bundle_configs(manifest, [2], INT8)
    assert all(INT8_LINE in text for text in _configs(variant_repository).values())


def _refused_for_v1(refused: pytest.ExceptionInfo[BundleError]) -> None:
    message = str(refused.value)
    assert "demo v1" in message and "model.int8.onnx" in message and "no int8 variant" in message, message
    assert "lit-train add-variant demo --precision int8" in message
    assert "lit-train promote demo 1 --triton-precision fp32" in message


def test_promotion_with_int8_options_refuses_a_version_without_the_variant(variant_repository: Path) -> None:
    before = _configs(variant_repository)
    with pytest.raises(BundleError) as refused:
        promote(variant_repository, "demo", 1, INT8)
    _refused_for_v1(refused)
    assert _configs(variant_repository) == before and active_version(variant_repository, "demo") == 2


def test_promotion_keeping_a_config_that_names_the_variant_refuses_a_version_without_it(
    variant_repository: Path,
) -> None:
    """Without options, promotion keeps an operator's config, default_model_filename included: served
    for v1 (no variant), Triton would fail to load it."""
    path = variant_repository / "demo_text" / "config.pbtxt"
    path.write_text(path.read_text() + "# tuned by ops\n")
    kept = promoted_config(path.read_text(), TEXT.model_copy(update={"file": "demo_text/1/model.onnx"}), [1])
    assert INT8_LINE in kept and "# tuned by ops" in kept  # what promotion would write: the name kept
    before = _configs(variant_repository)
    with pytest.raises(BundleError) as refused:
        promote(variant_repository, "demo", 1)
    _refused_for_v1(refused)
    assert _configs(variant_repository) == before and active_version(variant_repository, "demo") == 2

    promote(variant_repository, "demo", 1, TritonOptions(instance_kind="cpu"))  # the fix it names
    assert active_version(variant_repository, "demo") == 1
    assert not any("default_model_filename" in text for text in _configs(variant_repository).values())
    promote(variant_repository, "demo", 2)  # kept fp32 configs serve v2's model.onnx: fine
    assert active_version(variant_repository, "demo") == 2


def test_writing_missing_configs_refuses_a_variant_the_version_lacks(tmp_path: Path) -> None:
    plain, with_int8 = version_with_files(tmp_path, 1, int8=False), version_with_files(tmp_path, 2, int8=True)
    with pytest.raises(BundleError, match="no int8 variant"):
        write_missing_configs(tmp_path, plain, INT8)
    assert not list(tmp_path.glob("*/config.pbtxt"))  # neither config written
    write_missing_configs(tmp_path, with_int8, INT8)
    assert _configs(tmp_path) == bundle_configs(with_int8, [2], INT8)


def test_cli_triton_precision(variant_repository: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from training.cli import app, triton_options

    assert triton_options(precision="int8") == INT8  # CPU instances unless told otherwise
    assert triton_options(precision="fp32") == TritonOptions()
    assert triton_options("cpu", None, "int8") == INT8
    runner = CliRunner()
    base = ["promote", "demo", "-r", str(variant_repository)]
    result = runner.invoke(app, [*base, "1", "--triton-precision", "fp32"])
    assert result.exit_code == 0, result.output
    assert _configs(variant_repository) == bundle_configs(
        load_bundle(variant_repository).manifest, [1], TritonOptions()
    )
    result = runner.invoke(app, [*base, "2", "--triton-precision", "int8"])
    assert result.exit_code == 0, result.output
    assert _configs(variant_repository) == bundle_configs(load_bundle(variant_repository).manifest, [2], INT8)

    for extra, message in (
        (["1"], "no int8 variant"),  # the kept config names model.int8.onnx
        (["1", "--triton-precision", "int8"], "no int8 variant"),
        (["2", "--triton-precision", "int8", "--instance-kind", "gpu"], "needs instance_kind='cpu'"),
        (["2", "--triton-precision", "int8", "--tensorrt"], "needs instance_kind='cpu'"),
        (["2", "--triton-precision", "fp16"], "precision: Input should be 'fp32' or 'int8'"),
    ):
        refused = runner.invoke(app, [*base, *extra])
        output = " ".join(refused.output.split())  # rich wraps long lines
        assert refused.exit_code == 2 and message in output, output
    assert active_version(variant_repository, "demo") == 2

    retrain = [
        "retrain",
        "-r",
        str(variant_repository),
        "--out",
        str(tmp_path / "out"),
        "--triton-precision",
        "int8",
    ]
    refused = runner.invoke(app, retrain)  # refused before training: retraining makes no variant
    assert refused.exit_code == 2 and "--triton-precision fp32" in refused.output, refused.output
    assert not (tmp_path / "out").exists()
