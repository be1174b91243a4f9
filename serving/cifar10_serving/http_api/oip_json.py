"""Open Inference Protocol REST bodies <-> numpy: JSON tensors and Triton's binary tensor
data extension, with no web framework inside.

A request body is a JSON object (``id``, ``parameters``, ``inputs``, ``outputs``), followed,
when the ``Inference-Header-Content-Length`` header gives the JSON's length, by binary data:
an input whose parameter ``binary_data_size`` is set has its data there (little-endian, row
major; a BYTES element is a 4-byte little-endian length followed by its bytes), not in
``data``. The input ``images`` (``cifar10_serving.inference_protocol.tensors``) is:

* ``UINT8`` ``[N, 32, 32, 3]``: ``data`` flat (N*3072 integers 0..255) or nested as the
  shape, or N*3072 bytes of binary data;
* ``BYTES`` ``[N]`` or ``[N, 1]``, encoded images: in ``data`` each a base64 string (or a
  ``data:`` URL; JSON strings cannot hold arbitrary bytes), or Triton's serialized
  elements in binary data.

The answer is JSON, unless an output is asked for as binary data (its parameter
``binary_data``, or the request parameter ``binary_data_output``: what ``tritonclient.http``
asks for by default); then the output's data follows the JSON, whose length the answer's
``Inference-Header-Content-Length`` header gives. JSON is read and written by pydantic-core
(FastAPI's own), faster than the json module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pydantic_core

from cifar10_core import contract
from cifar10_core.errors import InvalidInputError, quoted
from cifar10_serving.dataplane.request import ImageInput
from cifar10_serving.http_api.base64_images import Base64Images
from cifar10_serving.inference_protocol import tensors
from cifar10_serving.onnx_model import ModelInfo

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_DATA_SIZE = "binary_data_size"
BINARY_DATA = "binary_data"
BINARY_DATA_OUTPUT = "binary_data_output"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"
CHEAP_JSON_BYTES = 64 * 1024
"""JSON up to this size is parsed on the event loop; larger, on a decode thread."""

_NAME = contract.INPUT_NAME


@dataclass(frozen=True, slots=True)
class InferCall:
    """A parsed request: its ``id``, the output asked for, whether as binary data, and the
    images (pixels, or encoded images for the data plane to decode)."""

    request_id: str
    output: tensors.OutputRequest
    binary_output: bool
    images: np.ndarray | Sequence[ImageInput]


def header_length(value: str | None, body_size: int) -> int | None:
    """The ``Inference-Header-Content-Length`` header's value, checked against the body."""
    if value is None:
        return None
    if not value.isdigit() or int(value) > body_size:
        raise InvalidInputError(
            f"{HEADER_LENGTH} must be the length of the JSON at the start of the body (0.."
            f"{body_size}), got {quoted(value)}")
    return int(value)


class InferBody:
    """One infer request's body. ``convert`` (the data plane's ``Conversion``) parses it and
    returns the images; ``call`` then holds the rest of what it asked."""

    def __init__(self, body: bytes, json_length: int | None, max_images: int) -> None:
        self.body = body
        self.json_length = len(body) if json_length is None else json_length
        self.binary = json_length is not None
        self.max_images = max_images
        self.call: InferCall | None = None

    @property
    def cheap(self) -> bool:
        """Small enough to parse on the event loop."""
        return self.json_length <= CHEAP_JSON_BYTES

    def convert(self) -> np.ndarray | Sequence[ImageInput]:
        if self.binary:  # the JSON copied (it is small), the data not
            self.call = parse(self.body[:self.json_length],
                              memoryview(self.body)[self.json_length:], self.max_images)
        else:
            self.call = parse(self.body, None, self.max_images)
        return self.call.images


def _object(value: object, where: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidInputError(f"{where} must be a JSON object, got {_kind(value)}")
    return value


def _list(value: object, where: str) -> list:
    if not isinstance(value, list):
        raise InvalidInputError(f"{where} must be a JSON array, got {_kind(value)}")
    return value


def _kind(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _parameters(holder: dict, where: str) -> dict:
    return _object(holder.get("parameters", {}), f"{where}.parameters")


def parse(document: bytes, binary: memoryview | None, max_images: int) -> InferCall:
    """An infer request: its JSON ``document`` and, with the binary extension, the
    ``binary`` data after it. InvalidInputError naming what is wrong."""
    try:
        request = pydantic_core.from_json(document, allow_inf_nan=False)
    except ValueError as exc:
        raise InvalidInputError(f"malformed JSON in the request body: {exc}") from None
    request = _object(request, "the request body")
    request_id = request.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidInputError(f"id must be a string, got {_kind(request_id)}")
    parameters = _parameters(request, "the request")
    inputs = _list(request.get("inputs", []), "inputs")
    listed = [_object(t, f"inputs[{i}]") for i, t in enumerate(inputs[:tensors.NAMES_QUOTED])]
    first = listed[0] if listed else {}
    shape = _list(first.get("shape", []), "inputs[0].shape")
    if not all(type(d) is int for d in shape):
        raise InvalidInputError("inputs[0].shape must be an array of integers")
    tensor = tensors.check_input(len(inputs), [str(t.get("name", "")) for t in listed],
                                 str(first.get("datatype", "")), shape, max_images)
    size = _parameters(first, "inputs[0]").get(BINARY_DATA_SIZE)
    if size is None:
        if binary is not None and len(binary):
            raise InvalidInputError(
                f"{len(binary)} bytes of binary data follow the JSON, but no input has the "
                f"parameter {BINARY_DATA_SIZE}")
        if "data" not in first:
            raise InvalidInputError(
                f"input '{_NAME}' has no data: set \"data\", or send it as binary data "
                f"(parameter {BINARY_DATA_SIZE} and the {HEADER_LENGTH} header)")
        images = _from_json(first["data"], tensor)
    else:
        images = _from_binary(size, binary, "data" in first, tensor)
    return InferCall(request_id, *_output(request, parameters), images)


def _from_binary(size: object, binary: memoryview | None, has_data: bool,
                 tensor: tensors.InputTensor) -> np.ndarray | list[bytes]:
    if binary is None:
        raise InvalidInputError(
            f"input '{_NAME}' has the parameter {BINARY_DATA_SIZE}, but the request has no "
            f"{HEADER_LENGTH} header saying where its JSON ends")
    if has_data:
        raise InvalidInputError(
            f"input '{_NAME}' has both \"data\" and the parameter {BINARY_DATA_SIZE}; send one")
    if type(size) is not int or size != len(binary):
        shown = size if type(size) is int else quoted(size)
        raise InvalidInputError(
            f"input '{_NAME}' has {BINARY_DATA_SIZE} {shown}, but {len(binary)} bytes of "
            f"binary data follow the JSON")
    if tensor.encoded:
        try:
            return tensors.deserialize_bytes(binary, tensor.count)
        except ValueError as exc:
            raise InvalidInputError(
                f"input '{_NAME}' ({tensors.ENCODED_DATATYPE}, {tensor.count} images) binary "
                f"data: {exc}") from None
    if size != tensor.pixel_bytes:
        raise InvalidInputError(
            f"input '{_NAME}' of shape {list(tensor.shape)} {tensors.INPUT_DATATYPE} needs "
            f"{tensor.pixel_bytes} bytes of binary data, got {size}")
    return np.frombuffer(binary, dtype=np.uint8).reshape(tensor.shape)


def _from_json(data: object, tensor: tensors.InputTensor) -> np.ndarray | Sequence[ImageInput]:
    data = _list(data, f"input '{_NAME}' data")
    if tensor.encoded:
        texts = data
        if tensor.count and len(data) == tensor.count and all(type(e) is list for e in data):
            texts = [e[0] if len(e) == 1 else e for e in data]  # nested as [N, 1]
        if len(texts) != tensor.count or not all(type(t) is str for t in texts):
            raise InvalidInputError(
                f"input '{_NAME}' ({tensors.ENCODED_DATATYPE}) data must be {tensor.count} "
                f"strings, each an image in base64 (as its shape says)")
        return Base64Images(texts)
    if len(data) == tensor.pixel_bytes:
        try:  # flat integers 0..255: bytes() checks the range, at C speed
            return np.frombuffer(bytes(data), dtype=np.uint8).reshape(tensor.shape)
        except (TypeError, ValueError):
            pass  # not all integers 0..255: said precisely below
    elif len(data) != tensor.count:  # neither flat nor nested as the shape: not worth reading
        raise InvalidInputError(
            f"input '{_NAME}' of shape {list(tensor.shape)} needs {tensor.pixel_bytes} values "
            f"in data (flat, or nested as the shape), got an array of {len(data)}")
    try:
        values = np.array(data)
    except ValueError:
        raise InvalidInputError(
            f"input '{_NAME}' data is not a rectangular array of integers") from None
    if values.size != tensor.pixel_bytes or (values.ndim != 1 and values.shape != tensor.shape):
        raise InvalidInputError(
            f"input '{_NAME}' of shape {list(tensor.shape)} needs {tensor.pixel_bytes} values "
            f"in data (flat, or nested as the shape), got {values.size} of shape "
            f"{list(values.shape)}")
    return tensors.check_pixel_values(values, "data").reshape(tensor.shape)


def _output(request: dict, parameters: dict) -> tuple[tensors.OutputRequest, bool]:
    binary = parameters.get(BINARY_DATA_OUTPUT, False)
    if not isinstance(binary, bool):
        raise InvalidInputError(f"parameter {BINARY_DATA_OUTPUT} must be a boolean")
    outputs = _list(request.get("outputs", []), "outputs")
    named = [_object(o, f"outputs[{i}]") for i, o in enumerate(outputs[:tensors.NAMES_QUOTED])]
    output_parameters = _parameters(named[0], "outputs[0]") if named else {}
    form = tensors.requested_output(len(outputs), [str(o.get("name", "")) for o in named],
                                    output_parameters.get(tensors.CLASSIFICATION_PARAMETER))
    binary = output_parameters.get(BINARY_DATA, binary)
    if not isinstance(binary, bool):
        raise InvalidInputError(f"output parameter {BINARY_DATA} must be a boolean")
    return form, binary


def encode_response(probabilities: np.ndarray, call: InferCall,
                    model: ModelInfo) -> tuple[bytes, int | None]:
    """The answer's body, and the length of its JSON when binary data follows it."""
    output = call.output
    if output.top_k is None:
        tensor = {"name": contract.OUTPUT_NAME, "datatype": tensors.OUTPUT_DATATYPE,
                  "shape": list(probabilities.shape)}
        if call.binary_output:
            binary = np.ascontiguousarray(probabilities, dtype="<f4").tobytes()
        else:
            tensor["data"] = probabilities.ravel().tolist()
    else:
        strings = tensors.classification_strings(probabilities, output.top_k, model.labels)
        tensor = {"name": contract.OUTPUT_NAME, "datatype": tensors.ENCODED_DATATYPE,
                  "shape": [len(probabilities), output.top_k]}
        if call.binary_output:
            binary = tensors.serialize_bytes(strings)
        else:
            tensor["data"] = [s.decode() for s in strings]
    if call.binary_output:
        tensor["parameters"] = {BINARY_DATA_SIZE: len(binary)}
    answer = {"model_name": model.name, "model_version": model.version, "outputs": [tensor]}
    if call.request_id:
        answer["id"] = call.request_id
    document = pydantic_core.to_json(answer)
    if not call.binary_output:
        return document, None
    return document + binary, len(document)
