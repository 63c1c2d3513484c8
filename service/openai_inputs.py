"""The body of OpenAI's ``POST /v1/embeddings``, with images in each dialect that servers use for them.

OpenAI's route embeds text only. Servers of image-text models extend it in three incompatible ways, all
taken here:

- NVIDIA NV-CLIP: ``input`` strings that are ``data:image/...;base64,`` URLs are images, other strings text;
- infinity: ``"modality": "image"`` makes every ``input`` string an image (base64 or a data URL);
- vLLM: chat-style ``messages`` whose ``content`` holds ``{"type": "image_url", "image_url": {"url"}}`` and
  ``{"type": "text", "text"}`` parts. Those parts are also taken as ``input`` items.

Every image part and every text is one embedding, in the order sent (a two-tower model embeds an image or a
text, never both together; vLLM's CLIP also takes one or the other per prompt). The server never fetches
URLs: an ``http(s)`` URL where an image or a text is expected is refused with the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from service.decode import decode_base64
from service.errors import ApiError
from service.schemas import PNG_1PX, Text

DATA_IMAGE = "data:image/"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageUrl(_Strict):
    url: str = Field(description="a data URL, 'data:image/png;base64,...' (URLs are never fetched)")
    detail: str | None = Field(default=None, description="accepted and ignored")


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageUrl | str


class TextPart(_Strict):
    type: Literal["text"]
    text: Text


Part = Annotated[ImagePart | TextPart, Field(discriminator="type")]


class Message(_Strict):
    role: str = Field(examples=["user"])
    content: Text | list[Part]
    name: str | None = None


class EmbeddingsRequest(_Strict):
    model: Text | None = Field(
        default=None,
        description="the model (see GET /v1/models); default: the gateway's default model",
        examples=["lit_demo"],
    )
    input: Text | list[Text | Part] | list[StrictInt] | list[list[StrictInt]] | None = Field(
        default=None,
        description="a text, or a list of texts, data-URL images and content parts (one embedding each); "
        "token arrays are not taken",
        examples=[["a photo of a red circle.", f"data:image/png;base64,{PNG_1PX}"]],
    )
    messages: list[Message] | None = Field(
        default=None,
        description="instead of input (vLLM's form): each text and image_url part is one embedding",
    )
    modality: Literal["text", "image"] | None = Field(
        default=None,
        description="infinity's form: 'image' makes every input string a base64 image or data URL",
    )
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="'base64': each embedding as base64 of its little-endian float32 bytes"
    )
    dimensions: StrictInt | None = Field(
        default=None, ge=1, description="only the model's own embedding size is taken (it is fixed)"
    )
    user: str | None = Field(default=None, description="accepted and ignored")


@dataclass(frozen=True)
class Inputs:
    """What to embed: texts and images, and where each goes back in the answer (the order sent)."""

    texts: list[str]
    images: list[bytes]
    order: list[tuple[str, int]]  # ("text" | "image", index into texts or images), one per embedding


def inputs_of(body: EmbeddingsRequest) -> Inputs:
    """The texts and decoded image bytes of ``body``, or a 400 saying what to send instead."""
    if (body.input is None) == (body.messages is None):
        raise ApiError("invalid_input", "send either input or messages (exactly one of them)")
    items: list[str | Part]
    if body.messages is not None:
        items = [part for message in body.messages for part in _parts(message.content)]
    elif isinstance(body.input, str):
        items = [body.input]
    else:
        items = list(_not_tokens(body.input or []))
    if not items:
        raise ApiError("invalid_input", "input is empty: send at least one text or image")
    texts: list[str] = []
    images: list[bytes] = []
    order: list[tuple[str, int]] = []
    for index, item in enumerate(items):
        if isinstance(item, ImagePart):
            url = item.image_url if isinstance(item.image_url, str) else item.image_url.url
            order.append(("image", len(images)))
            images.append(_image(url, index))
        elif _is_image(item, body.modality):
            order.append(("image", len(images)))
            images.append(_image(item.text if isinstance(item, TextPart) else item, index))
        else:
            text = item.text if isinstance(item, TextPart) else item
            if not text:
                raise ApiError("invalid_input", f"input {index} is an empty string: send some text")
            _refuse_url(text, index, body.modality)
            order.append(("text", len(texts)))
            texts.append(text)
    return Inputs(texts, images, order)


def _parts(content: str | list[Part]) -> list[str | Part]:
    return [content] if isinstance(content, str) else list(content)


def _not_tokens(items: list[str | Part] | list[int] | list[list[int]]) -> list[str | Part]:
    """The items, unless they are token ids: OpenAI takes pre-tokenised input, but only the model tokenises
    here."""
    kept: list[str | Part] = []
    for item in items:
        if isinstance(item, (int, list)):
            raise ApiError(
                "invalid_input", "token arrays are not taken: send the texts as strings (the model tokenises)"
            )
        kept.append(item)
    return kept


def _is_image(item: str | TextPart, modality: str | None) -> bool:
    if isinstance(item, TextPart):
        return False
    return modality == "image" or (modality is None and item[: len(DATA_IMAGE)].lower() == DATA_IMAGE)


def _image(source: str, index: int) -> bytes:
    if source[:8].lower().startswith(("http://", "https://")):
        raise _url_refused(index)
    try:
        return decode_base64(source)
    except ApiError as exc:
        raise ApiError(exc.code, f"input {index}: {exc.message}") from None


def _refuse_url(text: str, index: int, modality: str | None) -> None:
    """A bare URL where a text is expected is most likely an image to fetch; ``modality: text`` embeds it."""
    if modality is None and text.startswith(("http://", "https://")) and not any(c.isspace() for c in text):
        raise _url_refused(index, ' (to embed the URL itself as text, send "modality": "text")')


def _url_refused(index: int, extra: str = "") -> ApiError:
    return ApiError(
        "url_not_fetched",
        f"input {index} is a URL: the server never fetches URLs; send the image as a data URL "
        f"('data:image/jpeg;base64,...'){extra}",
    )
