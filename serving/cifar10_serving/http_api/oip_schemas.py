"""The Open Inference Protocol REST API's JSON bodies as the OpenAPI document describes them.

Only for the document: the routes (``cifar10_serving.http_api.oip``) read and write JSON
themselves (``cifar10_serving.http_api.oip_json``), so these are never used to validate.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Parameters = dict[str, Any]


class _Answer(BaseModel):
    model_config = ConfigDict(protected_namespaces=())  # fields named model_*


class ServerMetadata(_Answer):
    name: str
    version: str
    extensions: list[str] = Field(examples=[["classification", "model_configuration",
                                             "binary_tensor_data"]])


class Live(_Answer):
    live: bool


class Ready(_Answer):
    ready: bool


class TensorMetadata(_Answer):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1: any number (of images)")


class ModelMetadata(_Answer):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, str] = Field(
        description="the model file's own metadata: its training, data and test figures")


class ModelReady(_Answer):
    name: str
    ready: bool


class ModelConfig(_Answer):
    """Triton's model configuration: the fields clients and perf_analyzer read."""

    name: str
    platform: str
    backend: str
    max_batch_size: int = Field(description="the most images one request may carry")
    input: list[Parameters]
    output: list[Parameters]
    dynamic_batching: Parameters
    instance_group: list[Parameters]
    model_transaction_policy: Parameters


class ModelStatistics(_Answer):
    model_stats: list[Parameters] = Field(
        description="Triton's statistics: this server's inference calls since it started, "
                    "through either door")


class OutputTensor(_Answer):
    name: str
    datatype: str
    shape: list[int]
    parameters: Parameters | None = Field(
        None, description="binary_data_size: the tensor's bytes follow the JSON")
    data: list[Any] | None = Field(
        None, description="row-major: probabilities (FP32), or score:index:label strings "
                          "(BYTES, the classification extension)")


class InferAnswer(_Answer):
    model_name: str
    model_version: str
    id: str | None = Field(None, description="the request's id, if it had one")
    outputs: list[OutputTensor]
