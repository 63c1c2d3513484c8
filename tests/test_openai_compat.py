"""``POST /v1/embeddings``, driven by OpenAI's own Python SDK against a real uvicorn gateway with an API key.

Every embedding must equal what ``/v1/embed/text`` or ``/v1/embed/image`` gives for the same input (1e-6),
whichever dialect carried the image (a data URL in ``input``, ``"modality": "image"``, ``image_url`` parts in
``input`` or in chat-style ``messages``) and whichever encoding the answer used (the SDK asks for base64 by
default and decodes it). Errors must make the SDK raise its usual exception, carrying our message and code.
The dialect parsing is also tested without a server, on :func:`service.openai_inputs.inputs_of`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import numpy as np
import openai
import pytest

from harness.gateway import running_gateway
from service.errors import ApiError
from service.openai_inputs import EmbeddingsRequest, inputs_of
from tests.samples import images

KEY = "openai-compat-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TEXTS = ["a photo of a red circle.", "blue star", "ein grünes Quadrat 🟩"]
MODEL = "lit_demo"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    workdir = tmp_path_factory.mktemp("openai")
    with (
        running_gateway(workdir, LIT_API_KEYS=json.dumps([KEY])) as url,
        httpx.Client(base_url=url, headers=AUTH, timeout=60) as http,
    ):
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)
        yield SimpleNamespace(url=url, http=http, sdk=sdk)


@pytest.fixture(scope="module")
def pictures() -> list[bytes]:
    return images(3)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def data_url(data: bytes) -> str:
    return f"data:image/png;base64,{b64(data)}"


def reference(gateway: SimpleNamespace, texts: list[str] = (), pictures: list[bytes] = ()) -> np.ndarray:
    """Our own routes' embeddings: texts first, then images."""
    rows = []
    if texts:
        answer = gateway.http.post("/v1/embed/text", json={"texts": list(texts)})
        rows += answer.json()["embeddings"]
    if pictures:
        answer = gateway.http.post("/v1/embed/image", json={"images": [b64(p) for p in pictures]})
        rows += answer.json()["embeddings"]
    return np.asarray(rows, dtype=np.float32)


def vectors(response: openai.types.CreateEmbeddingResponse) -> np.ndarray:
    assert [d.index for d in response.data] == list(range(len(response.data)))
    return np.asarray([d.embedding for d in response.data], dtype=np.float32)


def assert_equal(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-6


def test_texts_equal_embed_text(gateway: SimpleNamespace) -> None:
    answer = gateway.sdk.embeddings.create(model=MODEL, input=TEXTS)  # the SDK asks for base64
    assert answer.model == MODEL and answer.object == "list"
    assert_equal(vectors(answer), reference(gateway, TEXTS))
    one = gateway.sdk.embeddings.create(model=MODEL, input=TEXTS[0], encoding_format="float")
    assert_equal(vectors(one), reference(gateway, TEXTS[:1]))


def test_usage_counts_the_texts_tokens(gateway: SimpleNamespace) -> None:
    short = gateway.sdk.embeddings.create(model=MODEL, input=["cat"]).usage
    longer = gateway.sdk.embeddings.create(model=MODEL, input=["cat", "a photo of a big cat"]).usage
    assert 0 < short.prompt_tokens < longer.prompt_tokens == longer.total_tokens
    pictures_only = gateway.sdk.embeddings.create(model=MODEL, input=[data_url(images(1)[0])]).usage
    assert pictures_only.prompt_tokens == 0


def test_images_as_data_urls(gateway: SimpleNamespace, pictures: list[bytes]) -> None:
    answer = gateway.sdk.embeddings.create(model=MODEL, input=[data_url(p) for p in pictures])
    assert_equal(vectors(answer), reference(gateway, pictures=pictures))


def test_images_with_modality_image(gateway: SimpleNamespace, pictures: list[bytes]) -> None:
    answer = gateway.sdk.embeddings.create(
        model=MODEL, input=[b64(p) for p in pictures], extra_body={"modality": "image"}
    )
    assert_equal(vectors(answer), reference(gateway, pictures=pictures))


def test_base64_encoding_is_little_endian_float32(gateway: SimpleNamespace, pictures: list[bytes]) -> None:
    answer = gateway.sdk.embeddings.create(
        model=MODEL, input=[TEXTS[0], data_url(pictures[0])], encoding_format="base64"
    )
    encoded = [d.embedding for d in answer.data]
    assert all(isinstance(e, str) for e in encoded)  # asked for explicitly, the SDK leaves it as sent
    decoded = np.stack([np.frombuffer(base64.b64decode(e), dtype="<f4") for e in encoded])
    assert_equal(decoded, reference(gateway, TEXTS[:1], pictures[:1]))


def test_mixed_input_keeps_its_order(gateway: SimpleNamespace, pictures: list[bytes]) -> None:
    sent = [data_url(pictures[0]), TEXTS[0], data_url(pictures[1]), TEXTS[1]]
    got = vectors(gateway.sdk.embeddings.create(model=MODEL, input=sent))
    texts, pics = reference(gateway, TEXTS[:2]), reference(gateway, pictures=pictures[:2])
    assert_equal(got, np.stack([pics[0], texts[0], pics[1], texts[1]]))


def test_image_url_parts_in_input_and_in_messages(gateway: SimpleNamespace, pictures: list[bytes]) -> None:
    parts = [
        {"type": "image_url", "image_url": {"url": data_url(pictures[0])}},
        {"type": "text", "text": TEXTS[0]},
        {"type": "image_url", "image_url": data_url(pictures[1])},
    ]
    expected_texts, expected_pics = reference(gateway, TEXTS[:1]), reference(gateway, pictures=pictures[:2])
    expected = np.stack([expected_pics[0], expected_texts[0], expected_pics[1]])
    by_input = gateway.http.post("/v1/embeddings", json={"model": MODEL, "input": parts})
    messages = [{"role": "user", "content": parts[:2]}, {"role": "user", "content": [parts[2]]}]
    by_messages = gateway.http.post("/v1/embeddings", json={"model": MODEL, "messages": messages})
    for answer in (by_input, by_messages):
        assert answer.status_code == 200, answer.text
        assert_equal(np.asarray([d["embedding"] for d in answer.json()["data"]], np.float32), expected)


def test_no_model_means_the_default(gateway: SimpleNamespace) -> None:
    answer = gateway.http.post("/v1/embeddings", json={"input": TEXTS[:1]})
    assert answer.status_code == 200 and answer.json()["model"] == MODEL


def test_a_bad_image_is_a_bad_request(gateway: SimpleNamespace, pictures: list[bytes]) -> None:
    cut_short = pictures[0][: len(pictures[0]) // 2]
    with pytest.raises(openai.BadRequestError) as raised:
        gateway.sdk.embeddings.create(model=MODEL, input=[data_url(cut_short)])
    assert raised.value.code == "undecodable_image" and raised.value.type == "invalid_request_error"
    assert "damaged" in raised.value.message or "truncated" in raised.value.message


@pytest.mark.parametrize(
    ("kwargs", "code", "words"),
    [
        ({"input": ["https://example.com/cat.jpg"]}, "url_not_fetched", "never fetches URLs"),
        ({"input": ["x"], "extra_body": {"modality": "image"}}, "invalid_base64", "base64"),
        ({"input": [[101, 2023, 102]]}, "invalid_input", "token arrays"),
        ({"input": []}, "invalid_input", "at least one"),
        ({"input": ["x"], "dimensions": 64}, "invalid_dimensions", "fixed size of 256"),
        ({"input": ["x"], "extra_body": {"modality": "video"}}, "invalid_body", "modality"),
        ({"input": ["x"] * 5000}, "too_many_texts", "limit"),
    ],
)
def test_bad_input_raises_bad_request(gateway: SimpleNamespace, kwargs: dict, code: str, words: str) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        gateway.sdk.embeddings.create(model=MODEL, **kwargs)
    assert raised.value.status_code == 400 and raised.value.code == code, raised.value.body
    assert words in raised.value.message


def test_the_model_s_own_size_is_accepted(gateway: SimpleNamespace) -> None:
    answer = gateway.sdk.embeddings.create(model=MODEL, input=["x"], dimensions=256)
    assert len(answer.data[0].embedding) == 256


def test_a_url_may_be_embedded_as_text(gateway: SimpleNamespace) -> None:
    url = "https://example.com/cat.jpg"
    answer = gateway.sdk.embeddings.create(model=MODEL, input=[url], extra_body={"modality": "text"})
    assert_equal(vectors(answer), reference(gateway, [url]))


def test_unknown_model_is_not_found(gateway: SimpleNamespace) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        gateway.sdk.embeddings.create(model="no_such_model", input=["x"])
    assert raised.value.code == "unknown_model" and "lit_demo" in raised.value.message


def test_a_wrong_or_missing_key_is_an_authentication_error(gateway: SimpleNamespace) -> None:
    wrong = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        wrong.embeddings.create(model=MODEL, input=["x"])
    assert raised.value.code == "unauthorized" and raised.value.type == "authentication_error"
    bare = httpx.post(f"{gateway.url}/v1/embeddings", json={"input": ["x"]}, timeout=60)
    assert bare.status_code == 401 and set(bare.json()["error"]) == {"message", "type", "param", "code"}


def test_the_route_is_in_the_openapi_document(gateway: SimpleNamespace) -> None:
    operation = gateway.http.get("/openapi.json").json()["paths"]["/v1/embeddings"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"]["properties"]["input"]
    assert operation["responses"]["400"]["content"]["application/json"]["schema"]


# --- the dialects, without a server -------------------------------------------------------------------


def parsed(**body: object) -> tuple[list[str], int, list[tuple[str, int]]]:
    inputs = inputs_of(EmbeddingsRequest.model_validate(body))
    return inputs.texts, len(inputs.images), inputs.order


def test_a_data_image_string_is_an_image_and_others_are_texts() -> None:
    png = data_url(b"\x89PNG\r\n\x1a\n")
    texts, count, order = parsed(input=["hello", png, "data:text/plain;base64,aGk="])
    assert texts == ["hello", "data:text/plain;base64,aGk="] and count == 1
    assert order == [("text", 0), ("image", 0), ("text", 1)]


def test_a_single_string_is_one_input() -> None:
    assert parsed(input="hello") == (["hello"], 0, [("text", 0)])


def test_message_content_may_be_a_string() -> None:
    assert parsed(messages=[{"role": "user", "content": "hi"}])[0] == ["hi"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"input": ["x"], "messages": [{"role": "user", "content": "x"}]},
        {"messages": []},
        {"input": [{"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}]},
    ],
)
def test_what_is_refused(body: dict) -> None:
    with pytest.raises(ApiError) as raised:
        parsed(**body)
    assert raised.value.status == 400
