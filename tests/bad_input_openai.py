"""The bad-input corpus for ``POST /v1/embeddings``: every problem with the input is a 400 (OpenAI's SDKs
raise ``BadRequestError`` for exactly that) in OpenAI's error shape, with our code; a body over the size
limit stays 413, an unknown model 404, another method 405."""

from __future__ import annotations

from harness.images import encode
from tests.bad_input_cases import JSON_CT, Case, case
from tests.bad_input_images import PDF, good_png, photo, png_header_only, truncated
from tests.bad_input_requests import b64, json_body, raw

PATH = "/v1/embeddings"


def _url(data: bytes) -> str:
    return f"data:image/png;base64,{b64(data)}"


def _embeddings(name: str, body: object, status: int, code: str | None = None, why: str = "") -> Case:
    return case(f"openai-{name}", "json", json_body(body), status, code, why, path=PATH)


def openai_cases() -> list[Case]:
    good = good_png()
    image_part = {"type": "image_url", "image_url": {"url": _url(good)}}
    return [
        _embeddings("one-text-ok", {"input": "a red circle"}, 200),
        _embeddings("mixed-ok", {"input": ["a red circle", _url(good)]}, 200),
        _embeddings("emoji-text-ok", {"input": ["🟥 ⭕ 赤い丸"]}, 200),
        _embeddings("message-parts-ok", {"messages": [{"role": "user", "content": [image_part]}]}, 200),
        _embeddings("no-input", {"model": "lit_demo"}, 400, "invalid_input"),
        _embeddings(
            "input-and-messages",
            {"input": "x", "messages": [{"role": "u", "content": "y"}]},
            400,
            "invalid_input",
        ),
        _embeddings("input-empty-list", {"input": []}, 400, "invalid_input"),
        _embeddings("input-empty-string", {"input": [""]}, 400, "invalid_input", "OpenAI refuses it too"),
        _embeddings("input-number", {"input": 42}, 400, "invalid_body"),
        _embeddings("input-ints-and-strings", {"input": [1, "a"]}, 400, "invalid_body"),
        _embeddings("input-nested-strings", {"input": [["a"]]}, 400, "invalid_body"),
        _embeddings("input-token-arrays", {"input": [[101, 102]]}, 400, "invalid_input"),
        _embeddings("input-http-url", {"input": ["https://example.com/cat.jpg"]}, 400, "url_not_fetched"),
        _embeddings(
            "part-http-url",
            {"input": [{"type": "image_url", "image_url": {"url": "http://x/a.png"}}]},
            400,
            "url_not_fetched",
        ),
        _embeddings(
            "part-without-url", {"input": [{"type": "image_url", "image_url": {}}]}, 400, "invalid_body"
        ),
        _embeddings("part-unknown-type", {"input": [{"type": "audio", "audio": "x"}]}, 400, "invalid_body"),
        _embeddings(
            "messages-empty-content", {"messages": [{"role": "user", "content": []}]}, 400, "invalid_input"
        ),
        _embeddings(
            "modality-image-with-text", {"input": ["hi, you!"], "modality": "image"}, 400, "invalid_base64"
        ),
        _embeddings("modality-unknown", {"input": ["x"], "modality": "audio"}, 400, "invalid_body"),
        _embeddings("data-url-not-base64", {"input": ["data:image/png,abc"]}, 400, "invalid_base64"),
        _embeddings("data-url-garbage", {"input": ["data:image/png;base64,@@@@"]}, 400, "invalid_base64"),
        _embeddings(
            "data-url-pdf",
            {"input": [_url(PDF)]},
            400,
            "unsupported_image_format",
            "415 elsewhere; 400 on OpenAI's route",
        ),
        _embeddings(
            "data-url-truncated", {"input": [_url(truncated(encode(photo()), 0.5))]}, 400, "undecodable_image"
        ),
        _embeddings(
            "data-url-bomb",
            {"input": [_url(png_header_only(50_000, 50_000))]},
            400,
            "image_too_many_pixels",
            "413 elsewhere; 400 on OpenAI's route",
        ),
        _embeddings(
            "encoding-format-unknown", {"input": "x", "encoding_format": "int8"}, 400, "invalid_body"
        ),
        _embeddings("dimensions-zero", {"input": "x", "dimensions": 0}, 400, "invalid_body"),
        _embeddings("dimensions-string", {"input": "x", "dimensions": "128"}, 400, "invalid_body"),
        _embeddings("dimensions-other", {"input": "x", "dimensions": 64}, 400, "invalid_dimensions"),
        _embeddings("unknown-field", {"inputs": "x"}, 400, "invalid_body", "a typo is not ignored"),
        _embeddings("65-images", {"input": [_url(good)] * 65}, 400, "too_many_images"),
        _embeddings("4097-texts", {"input": ["x"] * 4097}, 400, "too_many_texts"),
        _embeddings("unknown-model", {"input": "x", "model": "no_such_model"}, 404, "unknown_model"),
        case("openai-broken-json", "raw", raw(b'{"input": ', JSON_CT), 400, "invalid_body", path=PATH),
        case(
            "openai-lone-surrogate",
            "raw",
            raw(b'{"input": ["\\ud800"]}', JSON_CT),
            400,
            "invalid_body",
            path=PATH,
        ),
        case(
            "openai-ct-text-plain",
            "raw",
            raw(b'{"input": "x"}', "text/plain"),
            400,
            "unsupported_media_type",
            path=PATH,
        ),
        case(
            "openai-21mb-body",
            "raw",
            raw(lambda: b'{"input": "' + b"A" * (21 << 20) + b'"}', JSON_CT),
            413,
            "body_too_large",
            path=PATH,
        ),
        case("openai-get", "raw", dict, 405, "method_not_allowed", path=PATH, method="GET"),
    ]
