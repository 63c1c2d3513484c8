"""The bodies of the Open Inference Protocol (KServe v2) routes, as OpenAPI documents them, with examples.

The request models are what :func:`service.kserve_tensors.read_request` parses the JSON header with; the
response models only document what the routes write (service/kserve.py writes infer responses itself,
since binary outputs follow the JSON). :class:`TensorSpec` is one input or output of a protocol model: what
its metadata shows and what requests are checked against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt

from service.schemas import PNG_1PX, Text

Scalar = StrictBool | StrictInt | StrictFloat | Text
Parameters = dict[Text, Scalar]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestInput(_Strict):
    name: Text = Field(examples=["images"])
    shape: list[StrictInt] = Field(description="[N] for every input of these models", examples=[[1]])
    datatype: Text = Field(description="BYTES for every input of these models", examples=["BYTES"])
    parameters: Parameters | None = Field(
        default=None, description="binary_data_size: the input's bytes after the JSON header"
    )
    data: list[Any] | None = Field(
        default=None,
        description="the elements in row-major order (flat or nested): images as base64 strings or data: "
        "URLs, labels, templates and texts as strings; leave out when the data is binary",
        examples=[[PNG_1PX]],
    )


class RequestOutput(_Strict):
    name: Text = Field(examples=["scores"])
    parameters: Parameters | None = Field(
        default=None, description="binary_data: true to get this output as binary after the JSON header"
    )


class InferRequest(_Strict):
    id: Text | None = Field(default=None, description="echoed in the response", examples=["request-1"])
    parameters: Parameters | None = Field(
        default=None,
        description="label_set: a registered label set instead of a labels input; binary_data_output: true "
        "for every output as binary",
    )
    inputs: list[RequestInput] = Field(
        examples=[
            [
                {"name": "images", "shape": [1], "datatype": "BYTES", "data": [PNG_1PX]},
                {"name": "labels", "shape": [2], "datatype": "BYTES", "data": ["red circle", "blue square"]},
            ]
        ]
    )
    outputs: list[RequestOutput] | None = Field(
        default=None, description="the outputs wanted (default: all)", examples=[[{"name": "scores"}]]
    )


class ResponseOutput(BaseModel):
    name: str = Field(examples=["scores"])
    datatype: str = Field(examples=["FP32"])
    shape: list[int] = Field(examples=[[1, 2]])
    parameters: dict[str, int] | None = Field(
        default=None, description="binary_data_size when the data follows the JSON header"
    )
    data: list[float] | None = Field(default=None, examples=[[0.93, 0.07]])


class InferResponse(BaseModel):
    model_name: str = Field(examples=["lit_demo"])
    model_version: str = Field(examples=["1"])
    id: str | None = Field(default=None, examples=["request-1"])
    outputs: list[ResponseOutput]


class KServeError(BaseModel):
    error: str = Field(examples=["no model named 'cats'; this gateway serves lit_demo, lit_demo.embed"])


class ServerMetadata(BaseModel):
    name: str = Field(examples=["lit-zeroshot"])
    version: str = Field(examples=["0.1.0"])
    extensions: list[str] = Field(examples=[["binary_tensor_data", "parameters"]])


class Live(BaseModel):
    live: bool = Field(examples=[True])


class Ready(BaseModel):
    ready: bool = Field(examples=[True])


class ModelReady(BaseModel):
    name: str = Field(examples=["lit_demo"])
    ready: bool = Field(examples=[True])


class TensorMetadata(BaseModel):
    name: str = Field(examples=["images"])
    datatype: str = Field(examples=["BYTES"])
    shape: list[int] = Field(description="-1: any size", examples=[[-1]])


class ModelMetadata(BaseModel):
    name: str = Field(examples=["lit_demo"])
    versions: list[str] = Field(description="the version served (none while not loaded)", examples=[["1"]])
    platform: str = Field(examples=["lit_zeroshot"])
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


@dataclass(frozen=True)
class TensorSpec:
    """An input or output of a model, as model metadata shows it (-1: any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}
