"""``LIT_PRECISION``: which encoder files a model runs, its fp32 ``model.onnx`` or a gated variant.

The choice (:func:`service.precision.choose_precision`) over manifests with and without variants, CPU
feature sets, machines, providers and every requested value; then real gateway processes on a repository
whose active version has an int8 variant: by default it runs int8 and answers exactly what the int8 ONNX
files give, with ``LIT_PRECISION=fp32`` exactly what the fp32 files give (and so something else), with the
same top-1 either way; a precision that cannot be met leaves the model unloaded with the reason and the fix.
"""

from __future__ import annotations

import asyncio
import base64
import io
import platform
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from harness.gateway import REPOSITORY, running_gateway
from harness.images import LABELS, distinct_images, photo_jpegs
from harness.metrics import metric
from harness.repositories import int8_repository
from lit_bundle.manifest import Manifest, PrecisionGate, Variant, manifest_path, read_manifest, variant
from lit_bundle.preprocess import resize_and_crop
from lit_bundle.repository import active_version, load_bundle
from service.encoders import BackendConfigError
from service.precision import PrecisionError, choose_precision, cpu_flags, cpu_lacks
from service.settings import Settings
from service.triton_backend import TritonEncoders
from tests.samples import Reference, as_matrix, images

FIX = ("LIT_PRECISION=auto", "LIT_PRECISION=fp32")
X86, ARM = "x86_64", "aarch64"


# The choice ----------------------------------------------------------------------------------------------
def _variant(m: Manifest, precision: str) -> Variant:
    gate = PrecisionGate(
        data="synthetic evaluation split", images=2048, classes=64, prompts=256, min_cosine_image=0.999,
        min_cosine_text=0.996, top1_agreement=1.0, accuracy_fp32=0.999, accuracy=0.999, runs_on="test",
    )  # fmt: skip
    image, text = (
        f"{spec.file.rsplit('/', 1)[0]}/model.{precision}.onnx" for spec in (m.image_encoder, m.text_encoder)
    )
    return Variant(precision=precision, image_file=image, text_file=text, method="test", gate=gate)


@pytest.fixture(scope="module")
def manifests() -> dict[str, Manifest]:
    """The committed demo manifest (no variant) and copies with an int8, a bf16, and both variants."""
    plain = read_manifest(manifest_path(REPOSITORY, "lit_demo", active_version(REPOSITORY, "lit_demo") or 1))
    assert plain.variants == ()

    def having(*precisions: str) -> Manifest:
        return plain.model_copy(update={"variants": tuple(_variant(plain, p) for p in precisions)})

    return {"none": plain, "int8": having("int8"), "bf16": having("bf16"), "both": having("int8", "bf16")}


@pytest.mark.parametrize(
    ("kind", "flags", "machine"),
    [
        ("int8", {"avx2"}, X86),
        ("int8", set(), ARM),
        ("int8", set(), "arm64"),
        ("both", {"avx2", "avx512_bf16"}, X86),
    ],
)
def test_auto_runs_the_int8_variant_on_the_cpu_provider_where_the_cpu_supports_it(
    manifests: dict[str, Manifest], kind: str, flags: set[str], machine: str
) -> None:
    m = manifests[kind]
    choice = choose_precision(m, "auto", False, flags, machine)
    int8 = variant(m, "int8")
    assert int8 is not None
    assert (choice.precision, choice.image_file, choice.text_file) == (
        "int8",
        int8.image_file,
        int8.text_file,
    )
    assert choice.image_file != m.image_encoder.file
    assert "lit_demo v1 runs int8" in choice.reason and "top-1 agreement" in choice.reason


@pytest.mark.parametrize(
    ("kind", "flags", "machine", "skipped"),
    [
        ("none", {"avx2", "avx512_bf16"}, X86, ["no int8 variant", "no bf16 variant"]),
        ("int8", set(), X86, ["int8 variant present but this CPU lacks AVX2"]),
        ("int8", {"avx2"}, "riscv64", ["int8 variant present but int8 needs x86-64 with AVX2 or aarch64"]),
        (
            "bf16",
            {"avx2"},
            X86,
            ["no int8 variant", "bf16 variant present but this CPU lacks AVX512-BF16 and AMX"],
        ),
        ("bf16", {"avx2", "avx512_bf16"}, X86, ["bf16 variant present but bf16 runs", "no OpenVINO"]),
        ("bf16", {"amx_bf16"}, X86, ["bf16 variant present but bf16 runs", "no OpenVINO"]),
        ("both", set(), X86, ["int8 variant present but this CPU lacks AVX2", "lacks AVX512-BF16 and AMX"]),
    ],
)
def test_auto_runs_fp32_where_no_variant_fits_and_names_each_one_skipped(
    manifests: dict[str, Manifest], kind: str, flags: set[str], machine: str, skipped: list[str]
) -> None:
    m = manifests[kind]
    choice = choose_precision(m, "auto", False, flags, machine)
    assert (choice.precision, choice.image_file, choice.text_file) == (
        "fp32", m.image_encoder.file, m.text_encoder.file,
    )  # fmt: skip
    assert "runs its model.onnx files (fp32)" in choice.reason
    for why in skipped:
        assert why in choice.reason


def test_a_variant_whose_recorded_gate_misses_is_never_run(manifests: dict[str, Manifest]) -> None:
    """A hand-edited manifest cannot slip in a variant that did not pass: the figures are checked again."""
    m = manifests["int8"]
    weak = m.variants[0].gate.model_copy(update={"top1_agreement": 0.98})
    edited = m.model_copy(update={"variants": (m.variants[0].model_copy(update={"gate": weak}),)})
    choice = choose_precision(edited, "auto", False, {"avx2"}, X86)
    assert choice.precision == "fp32" and "recorded gate figures miss the gate" in choice.reason
    assert "98.00% of 2048 images < 99.5%" in choice.reason
    with pytest.raises(PrecisionError, match="cannot be trusted"):
        choose_precision(edited, "int8", False, {"avx2"}, X86)


@pytest.mark.parametrize("kind", ["int8", "both"])
def test_auto_on_an_accelerator_provider_runs_fp32(manifests: dict[str, Manifest], kind: str) -> None:
    m = manifests[kind]
    choice = choose_precision(m, "auto", True, {"avx2", "avx512_bf16", "amx_bf16"}, X86)
    assert (choice.precision, choice.image_file) == ("fp32", m.image_encoder.file)
    assert "accelerator" in choice.reason and "for the CPU provider" in choice.reason


@pytest.mark.parametrize("kind", ["none", "int8", "bf16", "both"])
@pytest.mark.parametrize("accelerated", [False, True])
@pytest.mark.parametrize(
    ("flags", "machine"), [({"avx2"}, X86), (set(), X86), (set(), ARM), ({"avx2", "avx512_bf16"}, X86)]
)
def test_fp32_always_runs_the_fp32_files(
    manifests: dict[str, Manifest], kind: str, accelerated: bool, flags: set[str], machine: str
) -> None:
    m = manifests[kind]
    choice = choose_precision(m, "fp32", accelerated, flags, machine)
    assert (choice.precision, choice.image_file, choice.text_file) == (
        "fp32", m.image_encoder.file, m.text_encoder.file,
    )  # fmt: skip
    assert "LIT_PRECISION=fp32" in choice.reason


@pytest.mark.parametrize(("flags", "machine"), [({"avx2"}, X86), (set(), ARM)])
def test_explicit_int8_runs_the_variant(
    manifests: dict[str, Manifest], flags: set[str], machine: str
) -> None:
    choice = choose_precision(manifests["both"], "int8", False, flags, machine)
    assert (choice.precision, choice.image_file) == ("int8", "lit_demo_image/1/model.int8.onnx")
    assert choice.text_file == "lit_demo_text/1/model.int8.onnx"


@pytest.mark.parametrize(
    ("kind", "requested", "accelerated", "flags", "machine", "missing"),
    [
        ("none", "int8", False, {"avx2"}, X86, [
            "no int8 variant", "lit-train add-variant lit_demo --precision int8",
            "lit-train export ... --precision int8",
        ]),
        ("int8", "int8", False, set(), X86, ["this CPU lacks AVX2"]),
        ("int8", "int8", False, {"avx2"}, "riscv64", ["int8 needs x86-64 with AVX2 or aarch64, not riscv64"]),
        ("int8", "int8", True, {"avx2"}, X86, ["accelerator provider (CUDA/TensorRT) is in use"]),
        ("bf16", "bf16", False, {"avx512_bf16"}, X86, ["OpenVINO"]),
        ("both", "bf16", False, {"amx_bf16"}, ARM, ["OpenVINO"]),
        ("int8", "bf16", False, {"avx2"}, X86, [
            "no bf16 variant", "lit-train add-variant lit_demo --precision bf16", "lacks AVX512-BF16 and AMX",
            "OpenVINO",
        ]),
    ],
)  # fmt: skip
def test_an_explicit_precision_that_cannot_be_met_says_what_is_missing_and_the_fix(
    manifests: dict[str, Manifest],
    kind: str,
    requested: str,
    accelerated: bool,
    flags: set[str],
    machine: str,
    missing: list[str],
) -> None:
    with pytest.raises(PrecisionError) as raised:
        choose_precision(manifests[kind], requested, accelerated, flags, machine)
    message = str(raised.value)
    assert f"LIT_PRECISION={requested} cannot run lit_demo v1" in message
    for text in [*missing, *FIX]:
        assert text in message


def test_bf16_is_never_chosen(manifests: dict[str, Manifest]) -> None:
    """bf16 needs OpenVINO, which the gateway does not have: not under any manifest, CPU or provider."""
    every_flag = {"avx2", "avx512_bf16", "amx_bf16"}
    for m in manifests.values():
        for machine in (X86, ARM):
            for accelerated in (False, True):
                chosen = choose_precision(m, "auto", accelerated, every_flag, machine).precision
                assert chosen == ("int8" if variant(m, "int8") and not accelerated else "fp32")
                with pytest.raises(PrecisionError, match="OpenVINO"):
                    choose_precision(m, "bf16", accelerated, every_flag, machine)


def test_cpu_flags_come_from_proc_cpuinfo_and_are_empty_where_unreadable(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text(
        "processor\t: 0\nflags\t\t: fpu sse2 avx2 amx_bf16\n\nprocessor\t: 1\nflags\t\t: fpu avx2\n"
    )
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\nCPU implementer\t: 0x41\n")
    assert cpu_flags(x86) == {"fpu", "sse2", "avx2", "amx_bf16"}
    assert cpu_flags(arm) == {"fp", "asimd", "bf16"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_triton_refuses_an_explicit_variant_and_reports_fp32() -> None:
    bundle = load_bundle(REPOSITORY)

    def settings(precision: str) -> Settings:
        return Settings(backend="triton", triton_url="127.0.0.1:1", precision=precision)

    for precision in ("int8", "bf16"):
        with pytest.raises(
            BackendConfigError, match=f"LIT_PRECISION={precision} with LIT_BACKEND=triton"
        ) as e:
            TritonEncoders.from_settings(bundle, settings(precision))
        assert all(fix in str(e.value) for fix in FIX)

    async def reported(precision: str) -> str:
        encoders = TritonEncoders.from_settings(bundle, settings(precision))
        try:
            return encoders.precision()
        finally:
            await encoders.close()

    assert [asyncio.run(reported(p)) for p in ("auto", "fp32")] == ["fp32", "fp32"]


# Real gateways on a repository with an int8 variant --------------------------------------------------------
@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return int8_repository(tmp_path_factory.mktemp("int8"))


def _gateway(repository: Path, workdir: Path, **env: str) -> Iterator[tuple[str, Path]]:
    with running_gateway(workdir, LIT_REPOSITORY=str(repository), **env) as url:
        yield url, workdir


@pytest.fixture(scope="module")
def int8_gateway(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """Default settings (``LIT_PRECISION`` unset: auto)."""
    if cpu_lacks("int8", cpu_flags(), platform.machine()):
        pytest.skip(f"this CPU cannot run int8 fast ({cpu_lacks('int8', cpu_flags(), platform.machine())})")
    yield from _gateway(repository, tmp_path_factory.mktemp("auto"))


@pytest.fixture(scope="module")
def fp32_gateway(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    yield from _gateway(repository, tmp_path_factory.mktemp("fp32"), LIT_PRECISION="fp32")


class Files(Reference):
    """The reference computation of ``tests/samples.py`` on the files of one precision."""

    def __init__(self, repository: Path, precision: str) -> None:
        super().__init__(repository)
        if precision != "fp32":
            chosen = variant(self.manifest, precision)
            assert chosen is not None
            self.image, self.text = (
                ort.InferenceSession(str(repository / file), providers=["CPUExecutionProvider"])
                for file in (chosen.image_file, chosen.text_file)
            )

    def image_embeddings(self, blobs: list[bytes]) -> np.ndarray:
        spec = self.manifest.preprocess
        pixels = np.stack(
            [np.asarray(resize_and_crop(Image.open(io.BytesIO(b)).convert("RGB"), spec)) for b in blobs]
        )
        embeddings: np.ndarray = self.image.run(None, {"pixels": pixels})[0]
        return embeddings

    def text_embeddings(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer.encode_batch(texts)
        feed = {
            key: np.array([getattr(e, key) for e in enc], dtype=np.int64) for key in ("ids", "attention_mask")
        }
        embeddings: np.ndarray = self.text.run(
            None, {"input_ids": feed["ids"], "attention_mask": feed["attention_mask"]}
        )[0]
        return embeddings


def _classify(url: str, blobs: list[bytes], templates: list[str] | None = None) -> np.ndarray:
    body = {"images": [base64.b64encode(b).decode() for b in blobs], "labels": LABELS}
    if templates:
        body["templates"] = templates
    response = httpx.post(f"{url}/v1/classify", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == {"name": "lit_demo", "version": 2}
    return as_matrix(response.json(), LABELS)


def _embed(url: str, route: str, body: dict) -> np.ndarray:
    response = httpx.post(f"{url}/v1/embed/{route}", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return np.array(response.json()["embeddings"])


def _described(url: str) -> tuple[dict, dict]:
    listed = httpx.get(f"{url}/v1/models").json()
    return listed, httpx.get(f"{url}/v1/models/lit_demo").json()


TEMPLATES = [None, ["a {} shape.", "a picture of a {}."]]
TEXTS = ["a photo of a red circle.", "blue", "a picture of a small green star on a grey background"]


def test_by_default_the_int8_variant_runs_and_answers_what_its_files_give(
    repository: Path, int8_gateway: tuple[str, Path]
) -> None:
    url, workdir = int8_gateway
    listed, one = _described(url)
    for info in (listed, listed["models"][0], one):
        assert (info["version"], info["precision"], info["variants"]) == (2, "int8", ["int8"])
    log = "".join(path.read_text() for path in workdir.glob("gateway-*.log"))
    assert log.count("precision: lit_demo v2 runs int8: LIT_PRECISION=auto (gate:") == 1
    int8, fp32 = Files(repository, "int8"), Files(repository, "fp32")
    blobs = images(8)
    for templates in TEMPLATES:
        scores = _classify(url, blobs, templates)
        assert np.abs(scores - int8.scores(blobs, LABELS, templates)).max() <= 1e-5
        assert np.abs(scores - fp32.scores(blobs, LABELS, templates)).max() > 1e-3  # int8 is not fp32
    image = _embed(url, "image", {"images": [base64.b64encode(b).decode() for b in blobs]})
    assert np.abs(image - int8.image_embeddings(blobs)).max() <= 1e-5
    text = _embed(url, "text", {"texts": TEXTS})
    assert np.abs(text - int8.text_embeddings(TEXTS)).max() <= 1e-5
    assert np.abs(text - fp32.text_embeddings(TEXTS)).max() > 1e-3


def test_lit_precision_fp32_runs_the_fp32_files_on_the_same_repository(
    repository: Path, int8_gateway: tuple[str, Path], fp32_gateway: tuple[str, Path]
) -> None:
    url, workdir = fp32_gateway
    listed, one = _described(url)
    for info in (listed, listed["models"][0], one):
        assert (info["version"], info["precision"], info["variants"]) == (2, "fp32", ["int8"])
    log = "".join(path.read_text() for path in workdir.glob("gateway-*.log"))
    assert "precision: lit_demo v2 runs its model.onnx files (fp32): LIT_PRECISION=fp32" in log
    fp32 = Files(repository, "fp32")
    blobs = images(8)
    for templates in TEMPLATES:
        scores = _classify(url, blobs, templates)
        assert np.abs(scores - fp32.scores(blobs, LABELS, templates)).max() <= 1e-5
        assert np.abs(scores - _classify(int8_gateway[0], blobs, templates)).max() > 1e-3  # a switch happened
    image = _embed(url, "image", {"images": [base64.b64encode(b).decode() for b in blobs]})
    assert np.abs(image - fp32.image_embeddings(blobs)).max() <= 1e-5
    text = _embed(url, "text", {"texts": TEXTS})
    assert np.abs(text - fp32.text_embeddings(TEXTS)).max() <= 1e-5


def test_int8_and_fp32_agree_on_top1_for_photos_and_synthetic_images(
    int8_gateway: tuple[str, Path], fp32_gateway: tuple[str, Path]
) -> None:
    blobs = photo_jpegs(6, size=(400, 300)) + distinct_images(len(LABELS), LABELS)
    int8, fp32 = _classify(int8_gateway[0], blobs), _classify(fp32_gateway[0], blobs)
    assert np.abs(int8 - fp32).max() > 1e-4  # two different encoders ...
    assert (int8.argmax(axis=1) == fp32.argmax(axis=1)).all()  # ... with the same answers
    assert (fp32.argmax(axis=1)[6:] == np.arange(len(LABELS))).all()  # each synthetic image its own class


def _refused(url: str, precision: str, *reasons: str) -> None:
    """The default model failed to load, as any model whose bundle cannot load: the process stays up,
    ``/readyz`` is 503 with the reason, ``/v1/models`` says failed, requests get 503 not_ready."""
    ready = httpx.get(f"{url}/readyz")
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "not_ready"
    info = httpx.get(f"{url}/v1/models").json()
    assert (info["state"], info["precision"], info["variants"]) == ("failed", None, [])
    for message in (ready.json()["error"]["message"], info["error"]):
        assert message.startswith("PrecisionError: ")
        for text in (f"LIT_PRECISION={precision} cannot run lit_demo", *reasons, *FIX):
            assert text in message
    body = {"images": [base64.b64encode(images(1)[0]).decode()], "labels": LABELS}
    answer = httpx.post(f"{url}/v1/classify", json=body, timeout=60)
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "not_ready"
    assert metric(url, 'lit_model_loads_total{model="lit_demo",outcome="refused"}') == 1


def test_lit_precision_bf16_leaves_the_model_unloaded_with_the_reason_and_the_fix(
    repository: Path, tmp_path: Path
) -> None:
    env = {"LIT_REPOSITORY": str(repository), "LIT_PRECISION": "bf16"}
    with running_gateway(tmp_path, ready_path="/healthz", **env) as url:
        _refused(url, "bf16", "lit_demo v2", "no bf16 variant", "OpenVINO")


def test_lit_precision_int8_without_a_variant_names_lit_train_add_variant(tmp_path: Path) -> None:
    with running_gateway(
        tmp_path, ready_path="/healthz", LIT_PRECISION="int8"
    ) as url:  # the committed repository
        _refused(
            url, "int8", "lit_demo v1", "no int8 variant", "lit-train add-variant lit_demo --precision int8"
        )


def test_an_explicit_variant_on_the_triton_backend_stops_the_gateway(tmp_path: Path) -> None:
    env = {"LIT_BACKEND": "triton", "LIT_TRITON_URL": "127.0.0.1:1", "LIT_PRECISION": "int8"}
    with (
        pytest.raises(RuntimeError, match="LIT_PRECISION=int8 with LIT_BACKEND=triton"),
        running_gateway(tmp_path, **env),
    ):
        pass
