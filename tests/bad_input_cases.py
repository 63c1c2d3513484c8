"""The bad-input corpus: tables of hostile and broken requests, each with the answer the gateway must give.

The images are forged in tests/bad_input_images.py and the requests built in tests/bad_input_requests.py.
A :class:`Case` says how the request is sent (``json``: a JSON body; ``multipart``: form-data; ``raw``: bytes
with hand-set headers), the status and error code it must get, and why, where the answer was a decision.

Decisions for the debatable cases (the documented error shape and limits in docs/http-api.md, and what
the gateway already did where sensible):
- Damaged images are 400 ``undecodable_image``, also when they are cut short inside the header of a served
  format (they start with its signature); bytes that are no served format at all are 415. libjpeg conceals
  damaged entropy-coded data (grey blocks), so a JPEG with zeroed scan data is served (200).
- Bombs (headers claiming more than 40 MP) are 413 ``image_too_many_pixels`` before any pixel is decoded.
  A few-KB PNG of 10,000,000 x 1 pixels is within 40 MP but would resize to billions of pixels (its short
  side scaled up to the model's): 400 ``extreme_aspect_ratio``. The corpus sends 100,000 x 1, which a
  gateway without that check survives (1.6 GB for a moment), so a regression fails the test instead of
  taking the machine down. A PNG text chunk that inflates past Pillow's limit is 400 ``undecodable_image``.
- Animated GIF, PNG and WebP: the first frame, 200. CMYK, 16-bit grey, 48-bit RGB, multi-page TIFF: 200
  (converted to RGB). EXIF orientation is applied (tests/test_bad_input_corpus.py shows it); a malformed
  EXIF block leaves the picture as stored, 200.
- Labels: duplicates are dropped keeping the first occurrence (after stripping whitespace), 200; unicode and
  right-to-left labels (with bidi control characters) come back exactly as sent, 200. Lengths are counted in
  code points: 300 emoji are allowed, 301 are 422 ``label_too_long``. Too many labels is 413.
- Templates: one without ``{}`` is 422 ``invalid_template``; with several, the label goes in every ``{}``
  (200); ``{0}`` and ``{name}`` are plain text, never ``str.format``; an empty list is 422 (omit the field
  to get the model's templates).
- ``top_k`` above the number of labels returns every label (200); 0, negatives, fractions, booleans and
  strings are 422.
- A multipart body without its closing boundary loses the unterminated part (the parser's behaviour): the
  request is then missing its image, 400 ``no_images``. Text fields sent as file parts are 422.
- Lone UTF-16 surrogates (``"\\ud800"``) in any JSON string are 422 ``invalid_body``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from PIL import Image

from harness.images import encode
from tests.bad_input_images import (
    ELF,
    HTML,
    PDF,
    SVG,
    ZIP,
    animated,
    blank_png,
    bmp_claiming,
    exif_bytes,
    gif_claiming,
    good_png,
    jpeg_claiming,
    photo,
    png_header_only,
    png_with_ztxt_bomb,
    rgb48_png,
    scrambled_after,
    sixteen_bit_grey,
    truncated,
    webp_claiming,
    zeroed_middle,
)
from tests.bad_input_requests import (
    Build,
    b64,
    chunked,
    classify_json,
    json_body,
    multipart,
    multipart_raw,
    part,
    raw,
)

LABELS = ["red circle", "blue square", "green star"]
FAMILY = "\U0001f469\u200d\U0001f469\u200d\U0001f467"  # one emoji: three people joined by zero-width joiners
UNICODE_LABELS = [
    "猫",
    "Straße",
    "naïve café",
    "e\u0301toile",
    "😀 smiling",
    f"{FAMILY} family",
    "a\u0000b",
    "∑≠∞",
]
RTL_LABELS = ["חתול", "قطة سوداء", "\u202eevil\u202c", "\u200fשלום\u200f", "mixed עברית and English"]

SentAs = Literal["json", "multipart", "raw"]


@dataclass(frozen=True)
class Case:
    """One request and the answer it must get.

    ``build`` returns the keyword arguments for ``httpx.Client.request`` (built lazily: some bodies are
    tens of MB). ``code`` is the error code for 4xx answers, None for 200. ``check`` inspects a 200 answer.
    """

    name: str
    sent_as: SentAs
    method: str
    path: str
    status: int
    code: str | None
    build: Build = field(repr=False)
    why: str = ""
    check: Callable[[httpx.Response], None] | None = field(default=None, repr=False)


def case(
    name: str,
    sent_as: SentAs,
    build: Build,
    status: int,
    code: str | None = None,
    why: str = "",
    check: Callable[[httpx.Response], None] | None = None,
    path: str = "/v1/classify",
    method: str = "POST",
) -> Case:
    """A :class:`Case`, by default a POST to /v1/classify."""
    return Case(name, sent_as, method, path, status, code, build, why, check)


def send(client: httpx.Client, case: Case) -> httpx.Response:
    return client.request(case.method, case.path, **case.build())


# --- checks on 200 answers --------------------------------------------------------------------------------


def predictions(response: httpx.Response) -> list[list[dict[str, Any]]]:
    return [r["predictions"] for r in response.json()["results"]]


def labels_echoed(expected: list[str]) -> Callable[[httpx.Response], None]:
    """Every result ranks exactly ``expected`` (as sets), byte for byte."""

    def check(response: httpx.Response) -> None:
        for ranked in predictions(response):
            got = [p["label"] for p in ranked]
            assert sorted(got) == sorted(expected), (got, expected)

    return check


def prediction_count(count: int) -> Callable[[httpx.Response], None]:
    def check(response: httpx.Response) -> None:
        assert all(len(ranked) == count for ranked in predictions(response)), response.text

    return check


def result_count(count: int) -> Callable[[httpx.Response], None]:
    def check(response: httpx.Response) -> None:
        assert len(response.json()["results"]) == count, response.text

    return check


# --- the corpus -------------------------------------------------------------------------------------------


# (name, bytes, status, code, why): sent both as a multipart file part and as base64 in JSON.
def image_payloads() -> list[tuple[str, bytes, int, str | None, str]]:
    jpeg, png = encode(photo(), "JPEG", quality=90), good_png()
    webp, gif = encode(photo(), "WEBP", quality=80), encode(photo(), "GIF")
    undecodable, unsupported, bomb = "undecodable_image", "unsupported_image_format", "image_too_many_pixels"
    return [
        ("jpeg_truncated_half", truncated(jpeg, 0.5), 400, undecodable, ""),
        ("jpeg_truncated_in_header", jpeg[:20], 400, undecodable, "starts like a JPEG: damaged, not foreign"),
        ("jpeg_header_scrambled", scrambled_after(jpeg, 4), 400, undecodable, ""),
        ("jpeg_scan_data_zeroed", zeroed_middle(jpeg), 200, None, "libjpeg conceals damaged scan data"),
        ("png_truncated_half", truncated(png, 0.5), 400, undecodable, ""),
        ("png_signature_only", png[:8], 400, undecodable, ""),
        ("png_idat_corrupt", zeroed_middle(png), 400, undecodable, ""),
        ("png_ihdr_crc_wrong", png[:29] + bytes([png[29] ^ 0xFF]) + png[30:], 400, undecodable, ""),
        ("webp_truncated_half", truncated(webp, 0.5), 400, undecodable, ""),
        ("webp_riff_header_only", webp[:12], 400, undecodable, ""),
        ("webp_corrupt", scrambled_after(webp, 12), 400, undecodable, "RIFF header intact"),
        ("gif_truncated_half", truncated(gif, 0.5), 400, undecodable, ""),
        ("gif_header_only", gif[:13], 400, undecodable, ""),
        ("gif_corrupt", scrambled_after(gif, 13), 400, undecodable, ""),
        ("zero_bytes", b"", 400, "empty_image", ""),
        ("one_byte", b"\xff", 415, unsupported, "one byte is no format's signature"),
        ("png_bomb_100000x100000", png_header_only(100_000, 100_000), 413, bomb, "refused from the header"),
        ("png_bomb_8000x8000_valid", blank_png(8_000, 8_000), 413, bomb, "a complete 8 KB PNG of 64 MP"),
        ("jpeg_bomb_65000x65000", jpeg_claiming(65_000, 65_000), 413, bomb, ""),
        ("jpeg_bomb_8000x6000", jpeg_claiming(8_000, 6_000), 413, bomb, "48 MP: over ours, under Pillow's"),
        ("gif_bomb_65535x65535", gif_claiming(65_535, 65_535), 413, bomb, ""),
        ("webp_bomb_16383x16383", webp_claiming(16_383, 16_383), 413, bomb, ""),
        ("bmp_bomb_60000x60000", bmp_claiming(60_000, 60_000), 413, bomb, ""),
        ("png_100000x1", blank_png(100_000, 1), 400, "extreme_aspect_ratio", "would resize to 6.4e6 x 64"),
        ("png_1x100000", blank_png(1, 100_000), 400, "extreme_aspect_ratio", "the same, standing"),
        ("png_ztxt_bomb", png_with_ztxt_bomb(), 400, undecodable, "text chunk over Pillow's 1 MB"),
        ("gif_animated", animated("GIF"), 200, None, "first frame"),
        ("png_animated_apng", animated("PNG"), 200, None, "first frame"),
        ("webp_animated", animated("WEBP", lossless=True), 200, None, "first frame"),
        ("tiff_multipage", animated("TIFF"), 200, None, "first page"),
        ("jpeg_cmyk", encode(Image.new("CMYK", (48, 40), (0, 200, 200, 0)), "JPEG"), 200, None, ""),
        ("tiff_cmyk", encode(Image.new("CMYK", (48, 40), (200, 0, 200, 0)), "TIFF"), 200, None, ""),
        ("png_grey_16bit", encode(sixteen_bit_grey(), "PNG"), 200, None, ""),
        ("png_rgb_48bit", rgb48_png(), 200, None, "hand-written: Pillow cannot save it"),
        ("jpeg_exif_rotated", encode(photo(), "JPEG", exif=exif_bytes(6)), 200, None, "rotation applied"),
        ("jpeg_exif_bad_orientation", encode(photo(), "JPEG", exif=exif_bytes(99)), 200, None, "ignored"),
        ("jpeg_exif_garbage", encode(photo(), "JPEG", exif=b"Exif\x00\x00garbage!"), 200, None, "ignored"),
        ("pdf", PDF, 415, unsupported, ""),
        ("svg", SVG, 415, unsupported, "vector images are not served"),
        ("html", HTML, 415, unsupported, ""),
        ("zip", ZIP, 415, unsupported, ""),
        ("elf_executable", ELF, 415, unsupported, ""),
        ("plain_text", b"just some text, not an image\n", 415, unsupported, ""),
        ("ppm", encode(photo(), "PPM"), 415, unsupported, "Pillow reads it; the gateway does not serve it"),
        ("ico", encode(photo(32, 32), "ICO"), 415, unsupported, "not a served format"),
    ]


def image_cases() -> list[Case]:
    cases = []
    for name, data, status, code, why in image_payloads():
        good = good_png()
        cases.append(
            Case(
                f"image-{name}-multipart",
                "multipart",
                "POST",
                "/v1/classify",
                status,
                code,
                multipart([good, data], {"labels": LABELS}),
                why,
                result_count(2) if status == 200 else None,
            )
        )
        cases.append(
            Case(
                f"image-{name}-json",
                "json",
                "POST",
                "/v1/embed/image",
                status,
                code,
                json_body({"images": [b64(data)]}),
                why,
            )
        )
    return cases


MEDIA = "unsupported_media_type"
JSON_CT = "application/json"


def body_cases() -> list[Case]:
    good = good_png()
    json_text = json.dumps({"images": [b64(good)], "labels": LABELS}).encode()
    deep = b"[" * 100_000 + b"]" * 100_000
    return [
        # wrong content types
        case("ct-text-plain", "raw", raw(json_text, "text/plain"), 415, MEDIA),
        case("ct-missing", "raw", raw(json_text, None), 415, MEDIA),
        case(
            "ct-image-png-raw-bytes", "raw", raw(good, "image/png"), 415, MEDIA, "send base64 or a file part"
        ),
        case(
            "ct-form-urlencoded", "raw", raw(b"labels=cat", "application/x-www-form-urlencoded"), 415, MEDIA
        ),
        case("ct-vendor-json", "raw", raw(json_text, "application/vnd.api+json"), 415, MEDIA),
        case(
            "ct-multipart-on-json-only-route",
            "multipart",
            multipart([good], {"texts": "a"}),
            415,
            MEDIA,
            path="/v1/embed/text",
        ),
        case(
            "ct-json-with-charset-ok",
            "raw",
            raw(json_text, "Application/JSON; charset=utf-8"),
            200,
            None,
            "media type parameters and case are ignored",
        ),
        # malformed multipart
        case(
            "multipart-no-boundary",
            "raw",
            raw(part("labels", b"cat"), "multipart/form-data"),
            400,
            "invalid_multipart",
        ),
        case(
            "multipart-wrong-boundary",
            "raw",
            multipart_raw(part("labels", b"cat", boundary="A"), boundary="Z"),
            400,
            "invalid_multipart",
        ),
        case(
            "multipart-garbage",
            "raw",
            raw(b"\x00\xff garbage \r\n--", "multipart/form-data; boundary=abc"),
            400,
            "invalid_multipart",
        ),
        case(
            "multipart-part-without-name",
            "raw",
            multipart_raw(b"--B\r\nContent-Disposition: form-data\r\n\r\nxx\r\n"),
            400,
            "invalid_multipart",
        ),
        case(
            "multipart-unterminated",
            "raw",
            multipart_raw(part("labels", b"cat"), part("images", good, "a.png"), close=False),
            400,
            "no_images",
            "the parser drops the part that never ended",
        ),
        case(
            "multipart-image-as-text-field",
            "raw",
            multipart_raw(part("labels", b"cat"), part("images", b64(good).encode())),
            400,
            "invalid_image_part",
        ),
        case(
            "multipart-labels-as-file",
            "multipart",
            multipart([good], extra_files=[("labels", ("labels.txt", b"cat", "text/plain"))]),
            422,
            "invalid_body",
            'was echoed as the label "UploadFile(...)"',
        ),
        case(
            "multipart-top-k-as-file",
            "multipart",
            multipart([good], {"labels": LABELS}, [("top_k", ("k.txt", b"1", "text/plain"))]),
            422,
            "invalid_body",
            "was a 500",
        ),
        case(
            "multipart-label-set-as-file",
            "multipart",
            multipart([good], extra_files=[("label_set", ("s.txt", b"pets", "text/plain"))]),
            422,
            "invalid_body",
            "was a 500",
        ),
        case(
            "multipart-no-image-part",
            "multipart",
            multipart([], {"labels": LABELS}, [("other", ("a.png", good, "image/png"))]),
            400,
            "no_images",
        ),
        case(
            "multipart-65-images",
            "multipart",
            multipart([good] * 65, {"labels": LABELS}),
            413,
            "too_many_images",
        ),
        # malformed JSON
        case("json-syntax-error", "raw", raw(b'{"images": [, }', JSON_CT), 422, "invalid_body"),
        case("json-truncated", "raw", raw(json_text[: len(json_text) // 2], JSON_CT), 422, "invalid_body"),
        case("json-null", "raw", raw(b"null", JSON_CT), 422, "invalid_body"),
        case(
            "json-top-level-array",
            "raw",
            raw(b'["a", "b"]', JSON_CT),
            422,
            "invalid_body",
            path="/v1/embed/text",
        ),
        case("json-empty-body", "raw", raw(b"", JSON_CT), 422, "invalid_body", path="/v1/embed/image"),
        case(
            "json-nested-100000-deep",
            "raw",
            raw(b'{"images": [], "labels": ' + deep + b"}", JSON_CT),
            422,
            "invalid_body",
            "pydantic's parser stops at its recursion limit",
        ),
        case(
            "json-nested-100000-deep-fastapi-route",
            "raw",
            raw(b'{"labels": ' + deep + b"}", JSON_CT),
            422,
            "invalid_body",
            "FastAPI's json.loads raises RecursionError",
            path="/v1/label-sets/deep",
            method="PUT",
        ),
        case(
            "json-invalid-utf8",
            "raw",
            raw(b'{"images": [], "labels": ["\xff\xfe"]}', JSON_CT),
            422,
            "invalid_body",
        ),
        case("json-utf16", "raw", raw(json_text.decode().encode("utf-16"), JSON_CT), 422, "invalid_body"),
        case(
            "json-lone-surrogate-label",
            "raw",
            raw(b'{"images": [], "labels": ["\\ud800"]}', JSON_CT),
            422,
            "invalid_body",
        ),
        case(
            "json-lone-surrogate-embed-text",
            "raw",
            raw(b'{"texts": ["ok", "x\\udfff"]}', JSON_CT),
            422,
            "invalid_body",
            "was a 500",
            path="/v1/embed/text",
        ),
        case(
            "json-lone-surrogate-label-set",
            "raw",
            raw(b'{"labels": ["\\ud83d"]}', JSON_CT),
            422,
            "invalid_body",
            "was a 500",
            path="/v1/label-sets/surrogates",
            method="PUT",
        ),
        case("json-unknown-field", "json", classify_json(labels=LABELS, colour="red"), 422, "invalid_body"),
        case(
            "json-images-not-a-list",
            "json",
            json_body({"images": b64(good), "labels": LABELS}),
            422,
            "invalid_body",
        ),
        case(
            "json-image-not-a-string",
            "json",
            json_body({"images": [12345]}),
            422,
            "invalid_body",
            path="/v1/embed/image",
        ),
        # malformed base64
        *[
            case(
                f"base64-{name}",
                "json",
                json_body({"images": [text], "labels": LABELS}),
                400,
                "invalid_base64",
            )
            for name, text in [
                ("not-base64", "this is not base64!"),
                ("bad-length", "abcde"),
                ("non-ascii", "iVBORw0KGgo\u00e9="),
                ("mixed-alphabets", "ab+c-d=="),
                ("data-url-not-base64", "data:image/png,iVBORw0KGgo="),
                ("http-url", "https://example.com/cat.jpg"),
                ("file-url", "file:///etc/passwd"),
            ]
        ],
        case(
            "base64-of-text",
            "json",
            json_body({"images": [b64(b"hello world")], "labels": LABELS}),
            415,
            "unsupported_image_format",
            "valid base64, not an image",
        ),
        case(
            "base64-data-url-ok",
            "json",
            json_body({"images": [f"data:image/png;base64,{b64(good)}"], "labels": LABELS}),
            200,
        ),
        # huge JSON
        case(
            "json-21mb-body",
            "raw",
            raw(lambda: b'{"images": ["' + b"A" * (21 << 20) + b'"]}', JSON_CT),
            413,
            "body_too_large",
            "refused from Content-Length",
        ),
        case(
            "json-21mb-chunked",
            "raw",
            chunked(21 << 20),
            413,
            "body_too_large",
            "no Content-Length: refused while it streams",
        ),
        case("json-1000000-labels", "json", classify_json(labels=["a"] * 1_000_000), 413, "too_many_labels"),
        case(
            "json-65-images",
            "json",
            json_body({"images": [b64(good)] * 65, "labels": LABELS}),
            413,
            "too_many_images",
        ),
        case("json-no-images", "json", json_body({"images": [], "labels": LABELS}), 400, "no_images"),
        case("json-missing-images", "json", json_body({"labels": LABELS}), 422, "invalid_body"),
        case("embed-text-empty", "json", json_body({"texts": []}), 400, "no_texts", path="/v1/embed/text"),
        case(
            "embed-text-4097",
            "json",
            json_body({"texts": ["a"] * 4097}),
            413,
            "too_many_texts",
            path="/v1/embed/text",
        ),
    ]


def label_cases() -> list[Case]:
    emoji_300, emoji_301 = "😀" * 300, "😀" * 301
    form_labels = [s for s in UNICODE_LABELS + RTL_LABELS if "\0" not in s]
    many = [f"label {i}" for i in range(4097)]
    long = "invalid_body"
    return [
        case("labels-empty", "json", classify_json(labels=[]), 400, "empty_labels"),
        case("labels-blank", "json", classify_json(labels=["cat", " \t "]), 400, "blank_label"),
        case(
            "labels-duplicated",
            "json",
            classify_json(labels=["cat", "dog", "cat", "cat"]),
            200,
            None,
            "duplicates dropped, first kept",
            labels_echoed(["cat", "dog"]),
        ),
        case(
            "labels-duplicated-after-strip",
            "multipart",
            multipart([good_png()], {"labels": ["cat", " cat ", "dog"]}),
            200,
            None,
            "labels are stripped, then made unique",
            labels_echoed(["cat", "dog"]),
        ),
        case("labels-301-chars", "json", classify_json(labels=["cat", "x" * 301]), 422, "label_too_long"),
        case(
            "labels-300-chars-ok",
            "json",
            classify_json(labels=["cat", "x" * 300]),
            200,
            None,
            "the limit itself is allowed",
            labels_echoed(["cat", "x" * 300]),
        ),
        case(
            "labels-300-emoji-ok",
            "json",
            classify_json(labels=[emoji_300, "cat"]),
            200,
            None,
            "300 code points (1,200 UTF-8 bytes)",
            labels_echoed([emoji_300, "cat"]),
        ),
        case("labels-301-emoji", "json", classify_json(labels=[emoji_301]), 422, "label_too_long"),
        case("labels-4097", "json", classify_json(labels=many), 413, "too_many_labels"),
        case(
            "labels-4097-multipart",
            "multipart",
            multipart([good_png()], {"labels": many}),
            413,
            "too_many_labels",
        ),
        case("labels-non-string", "json", classify_json(labels=["cat", 7]), 422, long),
        case("labels-null-item", "json", classify_json(labels=["cat", None]), 422, long),
        case("labels-nested-list", "json", classify_json(labels=[["cat"]]), 422, long),
        case("labels-object", "json", classify_json(labels={"cat": 1}), 422, long),
        case("labels-string-not-list", "json", classify_json(labels="cat"), 422, long),
        case(
            "labels-unicode",
            "json",
            classify_json(labels=UNICODE_LABELS),
            200,
            None,
            "echoed exactly",
            labels_echoed(UNICODE_LABELS),
        ),
        case(
            "labels-rtl",
            "json",
            classify_json(labels=RTL_LABELS),
            200,
            None,
            "echoed exactly, bidi controls included",
            labels_echoed(RTL_LABELS),
        ),
        case(
            "labels-unicode-rtl-multipart",
            "multipart",
            multipart([good_png()], {"labels": form_labels}),
            200,
            None,
            "UTF-8 form fields",
            labels_echoed(form_labels),
        ),
        case(
            "labels-and-label-set",
            "json",
            classify_json(labels=LABELS, label_set="pets"),
            400,
            "labels_required",
        ),
        case("labels-and-label-set-missing", "json", classify_json(), 400, "labels_required"),
        case("label-set-unknown", "json", classify_json(label_set="no-such-set"), 404, "unknown_label_set"),
        case(
            "label-set-invalid-name-put",
            "json",
            json_body({"labels": ["cat"]}),
            422,
            "invalid_label_set",
            path="/v1/label-sets/-dash-first",
            method="PUT",
        ),
        case(
            "label-set-name-traversal-get",
            "raw",
            dict,
            404,
            "not_found",
            "%2F decodes to /: no route",
            path="/v1/label-sets/..%2F..%2Fetc%2Fpasswd",
            method="GET",
        ),
        case(
            "label-set-50001-labels",
            "json",
            json_body({"labels": [str(i) for i in range(50_001)]}),
            413,
            "too_many_labels",
            path="/v1/label-sets/huge",
            method="PUT",
        ),
        # templates
        case(
            "templates-without-slot",
            "json",
            classify_json(labels=LABELS, templates=["a photo", "a {}"]),
            422,
            "invalid_template",
        ),
        case(
            "templates-blank", "json", classify_json(labels=LABELS, templates=[""]), 422, "invalid_template"
        ),
        case(
            "templates-empty-list",
            "json",
            classify_json(labels=LABELS, templates=[]),
            422,
            "invalid_body",
            "omit templates for the model's own",
        ),
        case(
            "templates-several-slots",
            "json",
            classify_json(labels=LABELS, templates=["a {} by a {}."]),
            422,
            "invalid_template",
            "one rule everywhere (training, /v1, Hugging Face, label sets): exactly one {}",
        ),
        case(
            "templates-format-fields",
            "json",
            classify_json(labels=LABELS, templates=["{0} {name} {} {{}}"]),
            422,
            "invalid_template",
            "stray braces are a mistake, not format fields",
        ),
        case(
            "labels-with-format-fields",
            "json",
            classify_json(labels=["{0.__class__}", "{name}", "red circle"]),
            200,
            None,
            "labels go in with str.replace, never str.format",
            labels_echoed(["{0.__class__}", "{name}", "red circle"]),
        ),
        case(
            "templates-non-string", "json", classify_json(labels=LABELS, templates=[1]), 422, "invalid_body"
        ),
        case(
            "templates-without-slot-multipart",
            "multipart",
            multipart([good_png()], {"labels": LABELS, "templates": "no slot"}),
            422,
            "invalid_template",
        ),
        case(
            "label-set-templates-without-slot",
            "json",
            json_body({"labels": ["cat"], "templates": ["no slot"]}),
            422,
            "invalid_template",
            path="/v1/label-sets/noslot",
            method="PUT",
        ),
        # top_k
        *[
            case(f"top-k-{name}", "json", classify_json(labels=LABELS, top_k=value), 422, "invalid_body")
            for name, value in [
                ("zero", 0),
                ("negative", -1),
                ("fraction", 1.5),
                ("string", "three"),
                ("numeric-string", "2"),
                ("boolean", True),
                ("object", {}),
            ]
        ],
        case(
            "top-k-1e400",
            "raw",
            raw(
                b'{"images": ["' + b64(good_png()).encode() + b'"], "labels": ["a"], "top_k": 1e400}', JSON_CT
            ),
            422,
            "invalid_body",
            "parses as infinity",
        ),
        *[
            case(
                f"top-k-multipart-{name}",
                "multipart",
                multipart([good_png()], {"labels": LABELS, "top_k": v}),
                422,
                "invalid_body",
            )
            for name, v in [("zero", "0"), ("negative", "-3"), ("fraction", "1.5"), ("word", "three")]
        ],
        case(
            "top-k-huge",
            "json",
            classify_json(labels=LABELS, top_k=10**30),
            200,
            None,
            "capped at the number of labels",
            prediction_count(len(LABELS)),
        ),
        case("top-k-one", "json", classify_json(labels=LABELS, top_k=1), 200, None, "", prediction_count(1)),
        # routes and methods
        case("route-unknown", "raw", dict, 404, "not_found", path="/v1/nothing-here", method="GET"),
        case(
            "method-not-allowed", "raw", dict, 405, "method_not_allowed", path="/v1/classify", method="DELETE"
        ),
    ]


def build_corpus() -> list[Case]:
    cases = image_cases() + body_cases() + label_cases()
    names = [case.name for case in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases
