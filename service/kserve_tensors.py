"""The tensors of the Open Inference Protocol (KServe v2) over HTTP: reading and checking a request.

A request is a JSON object (:class:`InferRequest`). With Triton's binary tensor data extension the header
``Inference-Header-Content-Length: n`` says that only the body's first n bytes are that object; the rest is
the raw data of the inputs that declare ``parameters.binary_data_size``, one after the other in the order
the inputs are listed. A BYTES element is a 4-byte little-endian length and then its bytes (what
``tritonclient`` sends). Outputs go back as JSON ``data``, or as little-endian FP32 after the JSON header when
asked for (per output ``binary_data``, or ``binary_data_output`` for all; service/kserve.py writes them).

Every size a client declares is checked against the bytes that came, never used to allocate, and every
mistake is a 400 that says what to fix (a body that is not the protocol's JSON at all is our usual 422).
The gRPC transport (service/kserve_protobuf.py) checks its messages with the same functions.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from service.decode import decode_base64
from service.errors import ApiError
from service.kserve_schemas import InferRequest, Parameters, RequestInput, RequestOutput, TensorSpec
from service.request_bodies import parse_json

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_MEDIA_TYPE = "application/octet-stream"
DATATYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"}
    | {"BF16", "BYTES"}
)
_LENGTH = struct.Struct("<I")
_UNSUPPORTED_PARAMETERS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


@dataclass(frozen=True)
class Tensor:
    """A BYTES input: strings from JSON ``data`` or bytes from the binary part, by element."""

    name: str
    elements: Sequence[str | bytes]

    def images(self) -> list[bytes]:
        """Encoded image files: JSON cannot carry raw bytes, so its strings are base64 (or data: URLs)."""
        return [e if isinstance(e, bytes) else decode_base64(e) for e in self.elements]

    def texts(self) -> list[str]:
        return [_utf8(e, self.name, i) if isinstance(e, bytes) else e for i, e in enumerate(self.elements)]


@dataclass(frozen=True)
class Request:
    """A checked request: inputs by name, outputs wanted (name -> binary?; all unless ``named_outputs``)."""

    id: str | None
    parameters: Parameters
    inputs: dict[str, Tensor]
    outputs: dict[str, bool]
    named_outputs: bool


def invalid(message: str) -> ApiError:
    return ApiError("invalid_inference_request", message)


def invalid_binary(message: str) -> ApiError:
    return ApiError("invalid_binary_data", message)


def read_request(
    body: bytes, header_length: str | None, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]
) -> Request:
    """The request in ``body`` checked against a model's inputs and outputs."""
    head, binary = split_body(body, header_length)
    request = parse_head(head, header_length is not None)
    specs = check_names([item.name for item in request.inputs], inputs)
    chunks = binary_chunks(request.inputs, binary, header_length is not None)
    tensors = {
        item.name: read_tensor(item, specs[item.name], chunk)
        for item, chunk in zip(request.inputs, chunks, strict=True)
    }
    parameters, named = request.parameters or {}, request.outputs or None  # no outputs named: all of them
    wanted = wanted_outputs(named, outputs, parameters.get("binary_data_output", False))
    return Request(request.id, parameters, tensors, wanted, named is not None)


def check_names(names: Sequence[str], inputs: Sequence[TensorSpec]) -> dict[str, TensorSpec]:
    """Each input's spec by name: an input the model does not take, or one sent twice, is a 400."""
    specs = {spec.name: spec for spec in inputs}
    for index, name in enumerate(names):
        if name not in specs:
            raise invalid(f"unknown input {name[:80]!r}; this model takes {_names(inputs)}")
        if name in names[:index]:
            raise invalid(f"input {name!r} is sent twice; send each input once")
    return specs


def parse_head(head: bytes, framed: bool) -> InferRequest:
    """The JSON header; binary data after JSON without the header that says where the JSON ends is a 400."""
    try:
        return parse_json(InferRequest, head)
    except ApiError:
        if framed or b'"binary_data_size"' not in head:
            raise
        raise invalid_binary(
            f"the body is not JSON alone and an input declares binary_data_size: send {HEADER_LENGTH} "
            "with the JSON header's length in bytes"
        ) from None


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary part of the body."""
    if header_length is None:
        return body, b""
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()):
        raise invalid_binary(
            f"{HEADER_LENGTH} must be the JSON header's length in bytes (a non-negative integer), "
            f"not {text[:40]!r}"
        )
    length = int(text) if len(text) <= 20 else len(body) + 1  # int() refuses thousands of digits
    if length > len(body):
        raise invalid_binary(
            f"{HEADER_LENGTH} is {text[:40]} but the body has {len(body):,} bytes: send the JSON header's "
            "length in bytes, then the JSON, then the inputs' binary data"
        )
    return body[:length], body[length:]


def binary_chunks(inputs: Sequence[RequestInput], binary: bytes, framed: bool) -> list[bytes | None]:
    """Each input's binary data (None for an input whose data is in the JSON), checked to add up."""
    chunks: list[bytes | None] = []
    offset = 0
    for item in inputs:
        size = (item.parameters or {}).get("binary_data_size")
        if size is None:
            chunks.append(None)
            continue
        if type(size) is not int or size < 0:
            raise invalid_binary(f"input {item.name!r}: binary_data_size must be a byte count (>= 0)")
        if not framed:
            raise invalid_binary(
                f"input {item.name!r} declares binary_data_size but the request has no {HEADER_LENGTH} "
                "header: send it with the JSON header's length in bytes"
            )
        if size > len(binary) - offset:
            raise invalid_binary(
                f"input {item.name!r} declares {size:,} bytes of binary data (binary_data_size) but only "
                f"{len(binary) - offset:,} are left after the JSON header and the inputs before it"
            )
        chunks.append(binary[offset : offset + size])
        offset += size
    if offset != len(binary):
        raise invalid_binary(
            f"{len(binary) - offset:,} bytes after the JSON header belong to no input: the inputs' "
            f"binary_data_size must add up to the body's length less {HEADER_LENGTH}"
        )
    return chunks


def read_tensor(item: RequestInput, spec: TensorSpec, chunk: bytes | None) -> Tensor:
    """One input's elements, checked against its spec, its shape and the way its data came."""
    count = check_tensor(item, spec)
    if chunk is not None:
        if item.data is not None:
            raise invalid(f"input {item.name!r} has both data and binary_data_size; send one of them")
        return Tensor(item.name, split_bytes(chunk, item.name, count))
    if item.data is None:
        raise invalid(f"input {item.name!r} has no data: send data, or binary_data_size and binary data")
    elements = list(_flat(item.data, count + 1))
    if len(elements) != count:
        raise invalid(
            f"input {item.name!r} has {len(elements):,}{'+' if len(elements) > count else ''} elements but "
            f"its shape {item.shape} says {count:,}; the shape must count the elements"
        )
    for index, element in enumerate(elements):
        if not isinstance(element, str):
            raise invalid(
                f"element {index} of input {item.name!r} is not a string ({type(element).__name__}): BYTES "
                "elements in JSON are strings, images base64-encoded"
            )
    return Tensor(item.name, elements)


def check_tensor(item: RequestInput, spec: TensorSpec) -> int:
    """The element count of an input whose parameters, datatype and shape fit ``spec`` (else a 400)."""
    for name in _UNSUPPORTED_PARAMETERS:
        if name in (item.parameters or {}):
            raise invalid(f"input {item.name!r}: shared memory is not supported; send the data in the body")
    if item.datatype != spec.datatype:
        known = "" if item.datatype in DATATYPES else " (not a datatype of the protocol)"
        raise invalid(
            f"input {item.name!r} is {item.datatype[:20]!r}{known}; it must be {spec.datatype} "
            "(images as their encoded files, text as UTF-8)"
        )
    if len(item.shape) != len(spec.shape) or any(d < 0 for d in item.shape):
        raise invalid(
            f"input {item.name!r} has shape {item.shape[:8]}; it must be [N] (N >= 0, the element count)"
        )
    return math.prod(item.shape)


def split_bytes(blob: bytes, name: str, count: int) -> list[bytes]:
    """BYTES binary data: ``count`` elements, each a 4-byte little-endian length and that many bytes."""
    elements: list[bytes] = []
    offset = 0
    while offset < len(blob) and len(elements) < count:
        if len(blob) - offset < _LENGTH.size:
            raise invalid_binary(f"input {name!r}: the binary data ends inside an element's 4-byte length")
        (length,) = _LENGTH.unpack_from(blob, offset)
        offset += _LENGTH.size
        if length > len(blob) - offset:
            raise invalid_binary(
                f"input {name!r}: element {len(elements)} declares {length:,} bytes but only "
                f"{len(blob) - offset:,} are left: each BYTES element is a 4-byte little-endian length, "
                "then that many bytes"
            )
        elements.append(blob[offset : offset + length])
        offset += length
    if len(elements) != count or offset != len(blob):
        raise invalid_binary(
            f"input {name!r}: its {len(blob):,} bytes of binary data do not hold exactly the {count:,} "
            "elements its shape says (each a 4-byte little-endian length, then that many bytes)"
        )
    return elements


def _flat(data: list[Any], limit: int) -> Iterator[Any]:
    """Row-major elements of flat or nested lists, at most ``limit`` of them (no recursion)."""
    stack: list[Iterator[Any]] = [iter(data)]
    produced = 0
    while stack and produced < limit:
        item = next(stack[-1], stack)
        if item is stack:
            stack.pop()
        elif isinstance(item, list):
            stack.append(iter(item))
        else:
            produced += 1
            yield item


def _utf8(data: bytes, name: str, index: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid(
            f"element {index} of input {name!r} is not UTF-8 text ({exc.reason}); encode it as UTF-8"
        ) from None


def wanted_outputs(
    requested: list[RequestOutput] | None, outputs: Sequence[TensorSpec], all_binary: Any
) -> dict[str, bool]:
    """Output name -> whether it goes back binary; every output when none is named."""
    if type(all_binary) is not bool:
        raise invalid("parameter binary_data_output must be true or false")
    if requested is None:
        return {spec.name: all_binary for spec in outputs}
    known = {spec.name for spec in outputs}
    wanted: dict[str, bool] = {}
    for output in requested:
        parameters = output.parameters or {}
        if output.name not in known:
            raise invalid(f"unknown output {output.name[:80]!r}; this model gives {_names(outputs)}")
        if output.name in wanted:
            raise invalid(f"output {output.name!r} is requested twice; request each output once")
        if "classification" in parameters or any(name in parameters for name in _UNSUPPORTED_PARAMETERS):
            raise invalid(
                f"output {output.name!r}: the classification and shared memory extensions are not "
                "supported; ask for the tensor itself"
            )
        binary = parameters.get("binary_data", all_binary)
        if type(binary) is not bool:
            raise invalid(f"output {output.name!r}: binary_data must be true or false")
        wanted[output.name] = binary
    return wanted


def _names(specs: Sequence[TensorSpec]) -> str:
    return ", ".join(spec.name for spec in specs)
