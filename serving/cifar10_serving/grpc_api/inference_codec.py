"""Open Inference Protocol (KServe v2) messages <-> numpy, with no gRPC and no model inside.

The served model has one input and one output (``cifar10_core.contract``):

* input ``images``: ``UINT8`` of shape ``[N, 32, 32, 3]`` (RGB, HWC), sent either as
  ``raw_input_contents`` (N*3072 bytes) or as typed ``contents.uint_contents``
  (N*3072 values, each 0..255);
* output ``probabilities``: ``FP32`` of shape ``[N, 10]``, in the label order, returned
  as ``raw_output_contents`` (little-endian float32), as Triton does over gRPC.

The classification extension works as in Triton: a requested output with the parameter
``classification`` (int64 k) returns, instead of the tensor, ``BYTES`` of shape ``[N, k]``
whose elements are ``"score:index:label"``, most probable first (k larger than the
number of classes returns all of them). BYTES raw contents use Triton's serialization:
each element is a 4-byte little-endian length followed by its bytes.

Every client mistake raises ``InvalidInputError`` (INVALID_ARGUMENT) with a message that
names the problem; the servicer turns it into a status code through ``cifar10_serving.grpc_api.status``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cifar10_core import contract
from cifar10_core.errors import InvalidInputError, quoted
from cifar10_protos.inference import grpc_service_pb2 as pb

INPUT_DATATYPE = "UINT8"
OUTPUT_DATATYPE = "FP32"
CLASSIFICATION_PARAMETER = "classification"
IMAGE_BYTES = contract.IMAGE_SIZE * contract.IMAGE_SIZE * contract.CHANNELS
INPUT_SHAPE = (-1, *contract.INPUT_SHAPE)
OUTPUT_SHAPE = (-1, contract.NUM_CLASSES)

# Datatype names of the protocol; used to name what a client sent.
_KNOWN_DATATYPES = frozenset(
    "BOOL UINT8 UINT16 UINT32 UINT64 INT8 INT16 INT32 INT64 FP16 FP32 FP64 BF16 BYTES".split()
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


@dataclass(frozen=True)
class OutputRequest:
    """What the client asked back: the tensor (``top_k`` None) or the top k as strings."""

    top_k: int | None = None


_NAMES_QUOTED = 4  # names an error message lists at most
_DIMS_SHOWN = 8  # dimensions of a client's shape an error message shows at most


def _shown(shape: tuple) -> str:
    if len(shape) <= _DIMS_SHOWN:
        return str(list(shape))
    return f"{list(shape[:_DIMS_SHOWN])}... ({len(shape)} dimensions)"


def parameter_value(parameter: pb.InferParameter) -> bool | int | float | str | None:
    """The value of an InferParameter, whichever of its oneof fields is set."""
    which = parameter.WhichOneof("parameter_choice")
    return None if which is None else getattr(parameter, which)


def decode_images(request: pb.ModelInferRequest, max_images: int) -> np.ndarray:
    """The request's ``images`` tensor as a uint8 array [N, 32, 32, 3], validated.

    Raises InvalidInputError naming the problem: missing or extra inputs, wrong name,
    datatype, shape, byte or element count, out-of-range values, both raw and typed
    contents, zero images or more than ``max_images``.
    """
    inputs = request.inputs
    if len(inputs) == 0:
        raise InvalidInputError(
            f"missing input: the request has no inputs; expected '{contract.INPUT_NAME}' "
            f"{INPUT_DATATYPE} {list(INPUT_SHAPE)}"
        )
    if len(inputs) > 1:
        names = ", ".join(quoted(t.name) for t in inputs[:_NAMES_QUOTED])
        raise InvalidInputError(
            f"expected exactly one input '{contract.INPUT_NAME}', got {len(inputs)}: {names}"
        )
    tensor = inputs[0]
    if tensor.name != contract.INPUT_NAME:
        raise InvalidInputError(
            f"unknown input {quoted(tensor.name)}: the model's only input is '{contract.INPUT_NAME}'"
        )
    if tensor.datatype != INPUT_DATATYPE:
        shown = tensor.datatype if tensor.datatype in _KNOWN_DATATYPES else quoted(tensor.datatype)
        raise InvalidInputError(
            f"input '{contract.INPUT_NAME}' has datatype {shown}; expected {INPUT_DATATYPE}"
        )
    dims = tensor.shape  # indexed, not iterated: iterating a repeated field is slow
    if len(dims) != 4 or (dims[1], dims[2], dims[3]) != contract.INPUT_SHAPE:
        shape = tuple(dims)
        raise InvalidInputError(
            f"input '{contract.INPUT_NAME}' has shape {_shown(shape)}; expected "
            f"[N, {', '.join(map(str, contract.INPUT_SHAPE))}] (N images, HWC, RGB)"
        )
    count = dims[0]
    shape = (count, *contract.INPUT_SHAPE)
    if count < 1:
        raise InvalidInputError(
            f"input '{contract.INPUT_NAME}' has shape {list(shape)}: zero images"
            if count == 0
            else f"input '{contract.INPUT_NAME}' has a negative batch dimension: {list(shape)}"
        )
    if count > max_images:
        raise InvalidInputError(
            f"input '{contract.INPUT_NAME}' has {count} images; at most {max_images} per request"
        )
    expected = count * IMAGE_BYTES
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
        data = raw[0]
        if len(data) != expected:
            raise InvalidInputError(
                f"input '{contract.INPUT_NAME}' of shape {list(shape)} {INPUT_DATATYPE} needs "
                f"{expected} bytes of raw_input_contents, got {len(data)}"
            )
        return np.frombuffer(data, dtype=np.uint8).reshape(shape)
    if not typed:
        raise InvalidInputError(
            f"input '{contract.INPUT_NAME}' has no data: set contents.uint_contents or "
            f"raw_input_contents"
        )
    if typed != ["uint_contents"]:
        raise InvalidInputError(
            f"input '{contract.INPUT_NAME}' is {INPUT_DATATYPE}: its typed data goes in "
            f"contents.uint_contents, got contents.{', contents.'.join(typed)}"
        )
    values = tensor.contents.uint_contents
    if len(values) != expected:
        raise InvalidInputError(
            f"input '{contract.INPUT_NAME}' of shape {list(shape)} needs {expected} values in "
            f"contents.uint_contents, got {len(values)}"
        )
    array = np.asarray(values, dtype=np.uint32)
    if int(array.max()) > 255:
        raise InvalidInputError(
            f"input '{contract.INPUT_NAME}' is {INPUT_DATATYPE}: contents.uint_contents holds "
            f"{int(array.max())}, above 255"
        )
    return array.astype(np.uint8).reshape(shape)


def requested_output(
    request: pb.ModelInferRequest, num_classes: int = contract.NUM_CLASSES
) -> OutputRequest:
    """Which form of the output the client asked for (tensor or classification)."""
    outputs = request.outputs
    if len(outputs) == 0:
        return OutputRequest()
    if len(outputs) > 1:
        names = ", ".join(quoted(o.name) for o in outputs[:_NAMES_QUOTED])
        raise InvalidInputError(
            f"expected at most one requested output '{contract.OUTPUT_NAME}', "
            f"got {len(outputs)}: {names}"
        )
    output = outputs[0]
    if output.name != contract.OUTPUT_NAME:
        raise InvalidInputError(
            f"unknown output {quoted(output.name)}: the model's only output is '{contract.OUTPUT_NAME}'"
        )
    if CLASSIFICATION_PARAMETER not in output.parameters:
        return OutputRequest()
    value = parameter_value(output.parameters[CLASSIFICATION_PARAMETER])
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(
            f"output parameter '{CLASSIFICATION_PARAMETER}' must be an int64 (the number of "
            f"classes to return), got {quoted(value)}"
        )
    if value < 0:
        raise InvalidInputError(
            f"output parameter '{CLASSIFICATION_PARAMETER}' must be >= 1, got {value}"
        )
    if value == 0:
        return OutputRequest()
    return OutputRequest(top_k=min(value, num_classes))


def serialize_bytes(elements: Sequence[bytes]) -> bytes:
    """BYTES tensor elements in Triton's raw form: 4-byte little-endian length + bytes each."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def deserialize_bytes(data: bytes) -> list[bytes]:
    """The inverse of ``serialize_bytes`` (used by tests and clients)."""
    elements, offset = [], 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise ValueError("truncated BYTES element length")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise ValueError("truncated BYTES element")
        elements.append(data[offset : offset + length])
        offset += length
    return elements


def classification_strings(
    probabilities: np.ndarray, top_k: int, labels: Sequence[str]
) -> list[bytes]:
    """Row-major [N, k] ``score:index:label`` strings, most probable first in each row."""
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    out = []
    for row, indices in zip(probabilities, order):
        for index in indices:
            out.append(f"{float(row[index]):f}:{int(index)}:{labels[int(index)]}".encode())
    return out


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
        tensor.datatype = "BYTES"
        tensor.shape.extend((count, output.top_k))
        response.raw_output_contents.append(
            serialize_bytes(classification_strings(probabilities, output.top_k, labels))
        )
    return response
