"""Open Inference Protocol gRPC messages <-> numpy, with no gRPC and no model inside.

The tensors and their checks are the protocol's, shared with the REST door
(``cifar10_serving.inference_protocol.tensors``); here is where their data sits in the
protobuf messages:

* input ``images`` ``UINT8``: ``raw_input_contents`` (N*3072 bytes) or typed
  ``contents.uint_contents`` (N*3072 values, each 0..255);
* input ``images`` ``BYTES`` (encoded images): ``contents.bytes_contents`` (one element per
  image) or ``raw_input_contents`` in Triton's BYTES serialization (each element a 4-byte
  little-endian length followed by its bytes);
* output: ``raw_output_contents``, little-endian float32 for the tensor, Triton's BYTES
  serialization for the classification strings, as Triton does over gRPC.

Every client mistake raises ``InvalidInputError`` (INVALID_ARGUMENT) with a message that
names the problem; the servicer turns it into a status code through
``cifar10_serving.grpc_api.status``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cifar10_core import contract
from cifar10_core.errors import InvalidInputError
from cifar10_protos.inference import grpc_service_pb2 as pb
from cifar10_serving.dataplane.request import ImageInput
from cifar10_serving.inference_protocol.tensors import (
    CLASSIFICATION_PARAMETER,
    ENCODED_DATATYPE,
    INPUT_DATATYPE,
    NAMES_QUOTED,
    OUTPUT_DATATYPE,
    InputTensor,
    OutputRequest,
    check_input,
    check_pixel_values,
    classification_strings,
    deserialize_bytes,
    requested_output,
    serialize_bytes,
)

_TYPED_FIELDS = (
    "bool_contents",
    "int_contents",
    "int64_contents",
    "uint_contents",
    "uint64_contents",
    "fp32_contents",
    "fp64_contents",
    "bytes_contents",
)


def parameter_value(parameter: pb.InferParameter) -> bool | int | float | str | None:
    """The value of an InferParameter, whichever of its oneof fields is set."""
    which = parameter.WhichOneof("parameter_choice")
    return None if which is None else getattr(parameter, which)


def decode_images(request: pb.ModelInferRequest,
                  max_images: int) -> np.ndarray | Sequence[ImageInput]:
    """The request's ``images``: a uint8 array [N, 32, 32, 3] (UINT8), or the N encoded
    images (BYTES) for the data plane to decode. InvalidInputError naming the problem: the
    input's name, datatype, shape or count (``check_input``), where its data is (both raw
    and typed contents, neither, the wrong typed field), its byte or element count,
    out-of-range values."""
    inputs = request.inputs
    tensor = inputs[0] if len(inputs) else pb.ModelInferRequest.InferInputTensor()
    tensor_spec = check_input(len(inputs), [t.name for t in inputs[:NAMES_QUOTED]],
                              tensor.datatype, tensor.shape, max_images)
    field = "bytes_contents" if tensor_spec.encoded else "uint_contents"
    typed = (
        [name for name in _TYPED_FIELDS if len(getattr(tensor.contents, name))]
        if tensor.HasField("contents")
        else []
    )
    raw = request.raw_input_contents
    if len(raw):
        if typed:
            raise InvalidInputError(
                f"input '{contract.INPUT_NAME}' has both raw_input_contents and "
                f"contents.{typed[0]}; send one of them"
            )
        if len(raw) != 1:
            raise InvalidInputError(
                f"raw_input_contents has {len(raw)} entries; expected 1 (one per input)"
            )
        return _from_raw(raw[0], tensor_spec)
    if not typed:
        raise InvalidInputError(
            f"input '{contract.INPUT_NAME}' has no data: set contents.{field} or "
            f"raw_input_contents"
        )
    datatype = ENCODED_DATATYPE if tensor_spec.encoded else INPUT_DATATYPE
    if typed != [field]:
        raise InvalidInputError(
            f"input '{contract.INPUT_NAME}' is {datatype}: its typed data goes in "
            f"contents.{field}, got contents.{', contents.'.join(typed)}"
        )
    values = getattr(tensor.contents, field)
    expected = tensor_spec.count if tensor_spec.encoded else tensor_spec.pixel_bytes
    if len(values) != expected:
        raise InvalidInputError(
            f"input '{contract.INPUT_NAME}' of shape {list(tensor_spec.shape)} needs {expected} "
            f"values in contents.{field}, got {len(values)}"
        )
    if tensor_spec.encoded:
        return values  # the repeated field: each element read when the data plane decodes it
    array = check_pixel_values(np.asarray(values, dtype=np.uint32), "contents.uint_contents")
    return array.reshape(tensor_spec.shape)


def _from_raw(data: bytes, tensor_spec: InputTensor) -> np.ndarray | list[bytes]:
    if tensor_spec.encoded:
        try:
            return deserialize_bytes(data, tensor_spec.count)
        except ValueError as exc:
            raise InvalidInputError(
                f"input '{contract.INPUT_NAME}' ({ENCODED_DATATYPE}, {tensor_spec.count} "
                f"images) raw_input_contents: {exc}") from None
    if len(data) != tensor_spec.pixel_bytes:
        raise InvalidInputError(
            f"input '{contract.INPUT_NAME}' of shape {list(tensor_spec.shape)} {INPUT_DATATYPE} "
            f"needs {tensor_spec.pixel_bytes} bytes of raw_input_contents, got {len(data)}"
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(tensor_spec.shape)


def output_request(request: pb.ModelInferRequest) -> OutputRequest:
    """Which form of the output the client asked for (tensor or classification)."""
    outputs = request.outputs
    classification = None
    if len(outputs) and CLASSIFICATION_PARAMETER in outputs[0].parameters:
        classification = parameter_value(outputs[0].parameters[CLASSIFICATION_PARAMETER])
    return requested_output(len(outputs), [o.name for o in outputs[:NAMES_QUOTED]],
                            classification)


def encode_response(
    response: pb.ModelInferResponse,
    probabilities: np.ndarray,
    output: OutputRequest,
    labels: Sequence[str],
) -> pb.ModelInferResponse:
    """Fill ``response`` with the output tensor (raw contents) and return it."""
    count = probabilities.shape[0]
    tensor = response.outputs.add()
    tensor.name = contract.OUTPUT_NAME
    if output.top_k is None:
        tensor.datatype = OUTPUT_DATATYPE
        tensor.shape.extend(probabilities.shape)
        response.raw_output_contents.append(
            np.ascontiguousarray(probabilities, dtype="<f4").tobytes()
        )
    else:
        tensor.datatype = ENCODED_DATATYPE
        tensor.shape.extend((count, output.top_k))
        response.raw_output_contents.append(
            serialize_bytes(classification_strings(probabilities, output.top_k, labels))
        )
    return response
