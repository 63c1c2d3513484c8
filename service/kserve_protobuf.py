"""The Open Inference Protocol's gRPC messages (Triton's ``inference`` package, generated as
``tritonclient.grpc.service_pb2``) to and from what service/kserve_models.py works with.

A ``ModelInferRequest`` becomes the :class:`Request` the HTTP transport reads, checked by the same functions
(service/kserve_tensors.py), so both transports refuse the same mistakes with the same messages. BYTES inputs
come as ``raw_input_contents`` (each element a 4-byte little-endian length and its bytes, what
``tritonclient.grpc`` sends; for every input or for none, as Triton has it) or as ``contents.bytes_contents``;
outputs go back as ``raw_output_contents``, little-endian FP32, one per output in the order of ``outputs``.

The messages are typed ``Any``: their classes exist only once the optional generated module is imported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from service.kserve_schemas import Parameters, RequestInput, RequestOutput, TensorSpec
from service.kserve_tensors import (
    Request,
    Tensor,
    check_names,
    check_tensor,
    invalid,
    invalid_binary,
    split_bytes,
    wanted_outputs,
)


def parameters_of(parameters: Mapping[str, Any]) -> Parameters:
    """A protobuf map of ``InferParameter`` as plain values (``label_set`` comes as a ``string_param``)."""
    values: Parameters = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is not None:
            values[key] = getattr(parameter, choice)
    return values


def read_infer_request(message: Any, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> Request:
    """A ``ModelInferRequest`` checked against a model's inputs and outputs."""
    raw: Sequence[bytes] = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise invalid_binary(
            f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs: send the raw "
            "contents of every input, in the order of the inputs, or of none"
        )
    specs = check_names([tensor.name for tensor in message.inputs], inputs)
    tensors: dict[str, Tensor] = {}
    for index, tensor in enumerate(message.inputs):
        item = RequestInput.model_construct(
            name=tensor.name,
            shape=list(tensor.shape),
            datatype=tensor.datatype,
            parameters=parameters_of(tensor.parameters) or None,
        )
        count = check_tensor(item, specs[tensor.name])
        tensors[tensor.name] = Tensor(tensor.name, _elements(tensor, raw[index] if raw else None, count))
    parameters = parameters_of(message.parameters)
    requested = [
        RequestOutput.model_construct(name=output.name, parameters=parameters_of(output.parameters) or None)
        for output in message.outputs
    ]
    wanted = wanted_outputs(requested or None, outputs, parameters.get("binary_data_output", False))
    return Request(message.id or None, parameters, tensors, wanted, bool(requested))


def _elements(tensor: Any, raw: bytes | None, count: int) -> list[bytes]:
    """A BYTES input's ``count`` elements, from its raw contents or its typed ``bytes_contents``."""
    if raw is not None:
        if tensor.contents.ByteSize():
            raise invalid(f"input {tensor.name!r} has both contents and raw_input_contents; send one of them")
        return split_bytes(raw, tensor.name, count)
    elements = list(tensor.contents.bytes_contents)
    if len(elements) != count:
        raise invalid(
            f"input {tensor.name!r} has {len(elements):,} elements in contents.bytes_contents but its shape "
            f"{list(tensor.shape)[:8]} says {count:,}; the shape must count the elements"
        )
    return elements


def infer_response(
    pb2: ModuleType, name: str, version: str, request_id: str | None, arrays: Mapping[str, np.ndarray]
) -> Any:
    """A ``ModelInferResponse``: each output FP32 with its shape, its data little-endian in
    ``raw_output_contents`` (where ``tritonclient.grpc``'s ``as_numpy`` reads it)."""
    response = pb2.ModelInferResponse(model_name=name, model_version=version, id=request_id or "")
    for output, values in arrays.items():
        response.outputs.add(name=output, datatype="FP32", shape=values.shape)
        response.raw_output_contents.append(np.ascontiguousarray(values, dtype="<f4").tobytes())
    return response
