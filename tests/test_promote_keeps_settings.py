"""``promote`` keeps every operator setting of the Triton configs and changes only the version policy (and the
tensors, when the new version's differ); explicit options regenerate the configs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lit_bundle.atomic import write_atomic
from lit_bundle.manifest import (
    BundleError,
    EncoderSpec,
    Manifest,
    TensorSpec,
    TextSpec,
    manifest_path,
    sha256_file,
)
from lit_bundle.preprocess import PreprocessSpec
from lit_bundle.repository import active_version, load_bundle, promote
from lit_bundle.triton import (
    TritonOptions,
    bundle_configs,
    check_config,
    encoder_config,
    parse_config,
    promoted_config,
    write_config,
)
from tests.helpers import tiny_checkpoint
from tests.test_triton_config import IMAGE, TEXT
from training.cli import app, triton_options

pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")

NAME = "demo"  # IMAGE and TEXT are the encoders demo_image and demo_text
COMMENT = "# tuned by ops: p99 < 20 ms at 400 req/s on one L4 (keep across promotions)"
TRT = (
    "# TensorRT, as tuned for the L4\n"
    "optimization {\n"
    "  execution_accelerators {\n"
    "    gpu_execution_accelerator [\n"
    "      {\n"
    '        name: "tensorrt"\n'
    '        parameters { key: "precision_mode" value: "FP16" }\n'
    '        parameters { key: "max_workspace_size_bytes" value: "2147483648" }\n'
    "{profiles}"
    "      }\n"
    "    ]\n"
    "  }\n"
    "}\n"
)
OPERATOR_BLOCKS = (
    f"{COMMENT}\n"
    'parameters { key: "intra_op_thread_count" value: { string_value: "4" } }\n'
    "response_cache { enable: true }\n"
)


def _profiles(encoder: EncoderSpec, batches: tuple[int, int, int], length: int) -> str:
    keys = ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")
    lines = []
    for key, batch in zip(keys, batches, strict=True):
        shapes = ",".join(f"{t.name}:{batch}x{length}" for t in encoder.inputs)
        lines.append(f'        parameters {{ key: "{key}" value: "{shapes}" }}\n')
    return "".join(lines)


def add_version(
    repository: Path,
    version: int,
    text_shape: tuple[int, ...] = (-1, 16),
    embed_dim: int = 128,
    context_length: int = 16,
) -> Manifest:
    """A complete version of bundle ``demo`` (placeholder model bytes: promotion never opens them)."""
    embedding = (TensorSpec(name="embedding", dtype="float32", shape=(-1, embed_dim)),)
    image = IMAGE.model_copy(update={"file": f"demo_image/{version}/model.onnx", "outputs": embedding})
    text = TEXT.model_copy(
        update={
            "file": f"demo_text/{version}/model.onnx",
            "inputs": tuple(t.model_copy(update={"shape": text_shape}) for t in TEXT.inputs),
            "outputs": embedding,
        }
    )
    tokenizer = f"demo_text/{version}/tokenizer.json"
    for relative, content in ((image.file, b"image"), (text.file, b"text"), (tokenizer, b"{}")):
        write_atomic(repository / relative, content + bytes([version]))
    manifest = Manifest(
        name=NAME,
        version=version,
        embed_dim=embed_dim,
        loss="softmax",
        logit_scale=100.0,
        preprocess=PreprocessSpec(size=64),
        image_encoder=image,
        text_encoder=text,
        text=TextSpec(tokenizer=tokenizer, context_length=context_length),
        files={rel: sha256_file(repository / rel) for rel in (image.file, text.file, tokenizer)},
    )
    write_atomic(manifest_path(repository, NAME, version), manifest.model_dump_json(indent=1))
    return manifest


def _edit(text: str, *replacements: tuple[str, str]) -> str:
    for old, new in replacements:
        assert old in text, f"{old!r} is not in the generated config"
        text = text.replace(old, new, 1)
    return text


def operator_edit(text: str, profiles: str = "") -> str:
    """What an operator tunes by hand in a generated config (``profiles``: TensorRT shape parameters)."""
    edited = _edit(
        text,
        ("max_batch_size: 64", "max_batch_size: 32"),
        (
            "  max_queue_delay_microseconds: 2000\n",
            "  max_queue_delay_microseconds: 750\n"
            "  default_queue_policy { max_queue_size: 128 timeout_action: REJECT "
            "default_timeout_microseconds: 50000 }\n",
        ),
        (
            "    kind: KIND_GPU\n    count: 1\n  }\n",
            "    kind: KIND_GPU\n    count: 2\n    gpus: [0]\n  },\n"
            "  {\n    kind: KIND_CPU\n    count: 4\n  }\n",
        ),
    )
    return edited + TRT.replace("{profiles}", profiles) + OPERATOR_BLOCKS


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """Bundle ``demo`` v1 (active) and v2 (same tensors), both configs tuned by an operator."""
    repo = tmp_path / "repo"
    add_version(repo, 1)
    add_version(repo, 2)
    promote(repo, NAME, 1)
    for model in ("demo_image", "demo_text"):
        path = repo / model / "config.pbtxt"
        write_config(path, operator_edit(path.read_text()))
    return repo


def _config(repository: Path, model: str) -> Path:
    return repository / model / "config.pbtxt"


def _without(config: Any, *fields: str) -> Any:
    copy = pb2.ModelConfig()
    copy.CopyFrom(config)
    for field in fields:
        copy.ClearField(field)
    return copy


def _served(config: Any) -> list[int]:
    assert config.version_policy.WhichOneof("policy_choice") == "specific"
    return list(config.version_policy.specific.versions)


def test_promotion_changes_only_the_version_policy(repository: Path) -> None:
    before = {model: _config(repository, model).read_text() for model in ("demo_image", "demo_text")}
    promote(repository, NAME, 2)
    manifest = load_bundle(repository).manifest
    assert manifest.version == 2 and active_version(repository, NAME) == 2
    for encoder in (manifest.image_encoder, manifest.text_encoder):
        after = _config(repository, encoder.triton_name).read_text()
        old, new = parse_config(before[encoder.triton_name]), parse_config(after)
        assert _served(old) == [1] and _served(new) == [2]
        assert _without(new, "version_policy") == _without(old, "version_policy")
        assert len(new.instance_group) == 2 and new.instance_group[1].count == 4  # the edit was kept
        check_config(after, encoder)
        header = after.split("\nname:")[0]
        assert header.startswith("# Generated by lit_bundle.triton") and "keeps them" in header
        assert COMMENT in after, "the operator's comments stay"

    promote(repository, NAME, 1)  # rolling back is the same operation, and undoes exactly that change
    assert active_version(repository, NAME) == 1
    for model, text in before.items():
        assert _config(repository, model).read_text() == text


def test_hand_written_layout_and_the_old_header(tmp_path: Path) -> None:
    """A config laid out otherwise (angle brackets, repeated fields, no name, the header of configs written
    before promotion kept settings) keeps its settings and comments; the old header is replaced."""
    add_version(tmp_path, 1)
    add_version(tmp_path, 2)
    promote(tmp_path, NAME, 1)
    path = _config(tmp_path, "demo_image")
    legacy = (
        "# Generated by lit_bundle.triton from the manifest of bundle 'demo': do not edit by hand.\n"
        "# Regenerate it (and pick the served version): lit-train promote demo <version> -r <repository>\n"
    )
    path.write_text(
        legacy + 'backend: "onnxruntime"  # the name defaults to the folder\n'
        "max_batch_size: 16\n"
        "input { name: 'pixels' data_type: TYPE_UINT8 dims: [ 64, 64, 3 ] }\n"
        "version_policy: < specific: < versions: 1 > >\n"
        'output: { name: "embedding" data_type: TYPE_FP32 dims: 128 } ;\n'
        "dynamic_batching { }  # batch whatever arrives\n"
        "instance_group [ { kind: KIND_CPU count: 3 } ]\n"
    )
    old = parse_config(path.read_text())
    promote(tmp_path, NAME, 2)
    text = path.read_text()
    new = parse_config(text)
    assert _served(new) == [2] and new.name == "demo_image"
    assert _without(new, "version_policy", "name") == _without(old, "version_policy", "name")
    assert "do not edit by hand" not in text and text.startswith("# Generated by lit_bundle.triton")
    assert "# batch whatever arrives" in text and "input { name: 'pixels'" in text
    check_config(text, load_bundle(tmp_path).manifest.image_encoder)


def test_repeated_fields_are_replaced_once_and_a_missing_policy_is_added() -> None:
    text = (
        'name: "demo_text"\nbackend: "onnxruntime"\nmax_batch_size: 8\n'
        '# ids\ninput { name: "input_ids" data_type: TYPE_INT64 dims: 16 }\n'
        '# mask\n  input { name: "attention_mask" data_type: TYPE_INT64 dims: 16 },\n'
        'output [{ name: "embedding" data_type: TYPE_FP32 dims: [128] }]\n'
        "instance_group { kind: KIND_CPU count: 2 }  # two\n"
    )
    wider = TEXT.model_copy(
        update={"inputs": tuple(t.model_copy(update={"shape": (-1, 32)}) for t in TEXT.inputs)}
    )
    promoted = promoted_config(text, wider, [5], 32)
    check_config(promoted, wider)
    config = parse_config(promoted)
    assert _served(config) == [5] and [list(t.dims) for t in config.input] == [[32], [32]]
    assert _without(config, "version_policy", "input") == _without(
        parse_config(text), "version_policy", "input"
    )
    assert (
        promoted.count("input [") == 1
        and "input {" not in promoted
        and "# ids" in promoted
        and "# mask" in promoted
    )
    assert "# two" in promoted and promoted.startswith("# Generated by lit_bundle.triton")


def test_a_layout_the_splice_cannot_follow_still_keeps_every_setting(
    repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should editing the text in place ever go wrong, the protobuf itself is written (comments lost)."""
    from lit_bundle import pbtxt

    monkeypatch.setattr(pbtxt, "splice", lambda text, fields: text.replace("count: 4", "count: 5"))
    old = parse_config(_config(repository, "demo_image").read_text())
    promote(repository, NAME, 2)
    text = _config(repository, "demo_image").read_text()
    new = parse_config(text)
    assert _served(new) == [2] and _without(new, "version_policy") == _without(old, "version_policy")
    assert text.startswith("# Generated by lit_bundle.triton") and COMMENT not in text


def test_new_input_dims_replace_the_tensors_and_what_is_built_from_them(tmp_path: Path) -> None:
    """v2's text encoder has a dynamic sequence axis: Triton could not load it with v1's input dims, nor
    warm it up with v1's warm-up shapes, and TensorRT profiles must cover its sequences."""
    add_version(tmp_path, 1)
    v2 = add_version(tmp_path, 2, text_shape=(-1, -1), context_length=77)
    promote(tmp_path, NAME, 1, TritonOptions(warmup=True))
    path = _config(tmp_path, "demo_text")
    write_config(path, operator_edit(path.read_text(), _profiles(TEXT, (2, 16, 32), 16)))
    before = path.read_text()
    old = parse_config(before)
    assert {tuple(v.dims) for w in old.model_warmup for v in w.inputs.values()} == {(16,)}
    image_before = _config(tmp_path, "demo_image").read_text()

    promote(tmp_path, NAME, 2)
    text = path.read_text()
    new = parse_config(text)
    check_config(text, v2.text_encoder)
    assert _served(new) == [2] and [list(t.dims) for t in new.input] == [[-1], [-1]]
    rebuilt = ("version_policy", "input", "optimization", "model_warmup")
    assert _without(new, *rebuilt) == _without(old, *rebuilt)
    assert list(new.output) == list(old.output)
    # Warm-up: the same samples (names, batch sizes, zero data) at the new context length.
    samples = [[(w.name, w.batch_size) for w in c.model_warmup] for c in (old, new)]
    assert samples[0] == samples[1] and len(samples[0]) == 2
    for warm in new.model_warmup:
        assert {name: (tuple(v.dims), v.zero_data) for name, v in warm.inputs.items()} == {
            "input_ids": ((77,), True),
            "attention_mask": ((77,), True),
        }
    # TensorRT: the operator's parameters and profile batch sizes, sequences 1..77.
    (accelerator,) = new.optimization.execution_accelerators.gpu_execution_accelerator
    params = dict(accelerator.parameters)
    assert params["max_workspace_size_bytes"] == "2147483648" and params["precision_mode"] == "FP16"
    assert params["trt_profile_min_shapes"] == "input_ids:2x1,attention_mask:2x1"
    assert params["trt_profile_opt_shapes"] == "input_ids:16x77,attention_mask:16x77"
    assert params["trt_profile_max_shapes"] == "input_ids:32x77,attention_mask:32x77"
    assert COMMENT in text and "# TensorRT, as tuned" in text

    image = parse_config(_config(tmp_path, "demo_image").read_text())  # unchanged tensors: version only
    assert _without(image, "version_policy") == _without(parse_config(image_before), "version_policy")


def test_new_embedding_size_replaces_only_the_outputs(repository: Path) -> None:
    v3 = add_version(repository, 3, embed_dim=256)
    old = parse_config(_config(repository, "demo_text").read_text())
    promote(repository, NAME, 3)
    text = _config(repository, "demo_text").read_text()
    new = parse_config(text)
    check_config(text, v3.text_encoder)
    assert [list(t.dims) for t in new.output] == [[256]] and list(new.input) == list(old.input)
    assert _without(new, "version_policy", "output") == _without(old, "version_policy", "output")


def test_warmup_from_files_cannot_follow_new_inputs(tmp_path: Path) -> None:
    add_version(tmp_path, 1)
    add_version(tmp_path, 2, text_shape=(-1, 32))
    promote(tmp_path, NAME, 1, TritonOptions(warmup=True))
    path = _config(tmp_path, "demo_text")
    path.write_text(path.read_text().replace("zero_data: true", 'input_data_file: "ids.bin"'))
    with pytest.raises(BundleError, match=r"'zeros_batch_1' reads input_data_file.*zero_data or random_data"):
        promote(tmp_path, NAME, 2)
    assert active_version(tmp_path, NAME) == 1


def test_explicit_options_regenerate_both_configs(repository: Path) -> None:
    options = TritonOptions(instance_kind="cpu", instance_count=2)
    promote(repository, NAME, 2, options)
    manifest = load_bundle(repository).manifest
    for model, text in bundle_configs(manifest, [2], options).items():
        assert _config(repository, model).read_text() == text
    assert COMMENT not in _config(repository, "demo_image").read_text()


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('name: "demo_image"', 'name: "other_image"', "names model 'other_image', not 'demo_image'"),
        ('backend: "onnxruntime"', 'backend: "pytorch"', "backend is 'pytorch', not 'onnxruntime'"),
        ("max_batch_size: 32", 'max_batch_size: "many"', "not a valid Triton ModelConfig"),
    ],
)
def test_a_config_of_another_model_is_refused(repository: Path, old: str, new: str, message: str) -> None:
    path = _config(repository, "demo_image")
    path.write_text(_edit(path.read_text(), (old, new)))
    before = {model: _config(repository, model).read_text() for model in ("demo_image", "demo_text")}
    with pytest.raises(BundleError, match=message) as refused:
        promote(repository, NAME, 2)
    assert str(path) in str(refused.value)
    assert "remove the file" in str(refused.value) and "--instance-kind" in str(refused.value)
    for model, text in before.items():  # neither config was written
        assert _config(repository, model).read_text() == text
    promote(repository, NAME, 2, TritonOptions())  # the fix it names
    assert active_version(repository, NAME) == 2


def test_a_config_triton_would_reject_is_not_written(repository: Path) -> None:
    path = _config(repository, "demo_text")
    path.write_text(_edit(path.read_text(), ("max_batch_size: 32", "max_batch_size: 0")))
    with pytest.raises(BundleError, match="max_batch_size is 0"):
        promote(repository, NAME, 2)
    assert active_version(repository, NAME) == 1 and "max_batch_size: 0" in path.read_text()


def test_without_tritonclient(repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway image lacks tritonclient: editing needs it, generating does not."""
    monkeypatch.setitem(sys.modules, "tritonclient.grpc.model_config_pb2", None)
    with pytest.raises(BundleError, match=r'pip install "tritonclient\[grpc\]"'):
        promote(repository, NAME, 2)
    promote(repository, NAME, 2, TritonOptions())
    fresh = tmp_path / "fresh"
    add_version(fresh, 1)
    promote(fresh, NAME, 1)
    assert active_version(fresh, NAME) == 1


def test_cli_promote_keeps_settings_unless_options_are_given(repository: Path) -> None:
    runner = CliRunner()
    old = parse_config(_config(repository, "demo_image").read_text())
    result = runner.invoke(app, ["promote", NAME, "2", "-r", str(repository)])
    assert result.exit_code == 0, result.output
    new = parse_config(_config(repository, "demo_image").read_text())
    assert _served(new) == [2] and _without(new, "version_policy") == _without(old, "version_policy")

    result = runner.invoke(app, ["promote", NAME, "1", "-r", str(repository), "--tensorrt"])
    assert result.exit_code == 0, result.output
    text = _config(repository, "demo_image").read_text()
    image = load_bundle(repository).manifest.image_encoder
    assert text == encoder_config(image, [1], TritonOptions(tensorrt=True))

    path = _config(repository, "demo_text")
    path.write_text(path.read_text().replace('name: "demo_text"', 'name: "other_text"'))
    refused = runner.invoke(app, ["promote", NAME, "2", "-r", str(repository)])
    assert refused.exit_code == 2 and "other_text" in refused.output and active_version(repository, NAME) == 1


def test_cli_builds_options_only_when_one_is_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert triton_options() is None
    assert triton_options("cpu") == TritonOptions(instance_kind="cpu")
    assert triton_options(tensorrt=False) == TritonOptions()
    assert triton_options(None, True) == TritonOptions(tensorrt=True)

    import training.retrain

    seen: list[TritonOptions | None] = []

    def fake_retrain(*args: Any, triton: TritonOptions | None = None, **kwargs: Any) -> Any:
        seen.append(triton)
        raise ValueError("stopped before training")

    monkeypatch.setattr(training.retrain, "retrain", fake_retrain)
    runner = CliRunner()
    base = ["retrain", "-r", str(tmp_path), "--out", str(tmp_path / "out")]
    for extra in ([], ["--instance-kind", "cpu"]):
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == 2 and "stopped before training" in result.output, result.output
    assert seen == [None, TritonOptions(instance_kind="cpu")]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), steps=2)


def test_export_promotes_keeping_settings(tmp_path: Path, checkpoint: Path) -> None:
    from training.export import export_bundle
    from training.export_checkpoint import request_from_checkpoint

    request = request_from_checkpoint(checkpoint, "tiny", progress=False)
    first = export_bundle(request, tmp_path)  # no config yet: the defaults
    path = tmp_path / "tiny_image" / "config.pbtxt"
    assert path.read_text() == encoder_config(first.image_encoder, [1], TritonOptions())
    write_config(path, operator_edit(path.read_text()))
    old = parse_config(path.read_text())

    export_bundle(request, tmp_path, activate=False)  # v2 published, configs untouched
    assert _served(parse_config(path.read_text())) == [1]
    export_bundle(request, tmp_path, activate=True)  # v3 promoted without options: settings kept
    new = parse_config(path.read_text())
    assert _served(new) == [3] and _without(new, "version_policy") == _without(old, "version_policy")
    fourth = export_bundle(request, tmp_path, triton=TritonOptions(), activate=True)  # explicit: regenerated
    assert path.read_text() == encoder_config(fourth.image_encoder, [4], TritonOptions())
