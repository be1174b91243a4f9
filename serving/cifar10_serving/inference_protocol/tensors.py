"""The served model's tensors in the Open Inference Protocol, checked the same way by every door.

One input and one output (``cifar10_core.contract``):

* input ``images``, either ``UINT8`` of shape ``[N, 32, 32, 3]`` (RGB pixels, HWC), or
  ``BYTES`` of shape ``[N]`` (or ``[N, 1]``) whose elements are encoded images (PNG, JPEG,
  ...) of any size, decoded and resized by the data plane as cifar10.v2 Classify does (as
  OpenVINO Model Server takes encoded images on a ``BYTES`` input);
* output ``probabilities``: ``FP32`` of shape ``[N, 10]``, in the label order.

The classification extension works as in Triton: a requested output with the parameter
``classification`` (int64 k) returns, instead of the tensor, ``BYTES`` of shape ``[N, k]``
whose elements are ``"score:index:label"``, most probable first (a k larger than the number
of classes returns all of them). A tensor answer has a row for every image, so an encoded
image that does not decode fails the whole request, naming it.

Every client mistake raises ``InvalidInputError`` with a message that names it; each door
adds its own wire-level checks (where the data is, how many bytes) on top of these.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cifar10_core import contract
from cifar10_core.errors import InvalidInputError, quoted
from cifar10_serving.dataplane.decoding import failures_message
from cifar10_serving.dataplane.request import InferenceResult

INPUT_DATATYPE = "UINT8"
ENCODED_DATATYPE = "BYTES"
OUTPUT_DATATYPE = "FP32"
CLASSIFICATION_PARAMETER = "classification"
IMAGE_BYTES = contract.IMAGE_SIZE * contract.IMAGE_SIZE * contract.CHANNELS
INPUT_SHAPE = (-1, *contract.INPUT_SHAPE)
OUTPUT_SHAPE = (-1, contract.NUM_CLASSES)

# Datatype names of the protocol; used to name what a client sent.
KNOWN_DATATYPES = frozenset(
    "BOOL UINT8 UINT16 UINT32 UINT64 INT8 INT16 INT32 INT64 FP16 FP32 FP64 BF16 BYTES".split()
)
NAMES_QUOTED = 4  # names an error message lists at most
_DIMS_SHOWN = 8  # dimensions of a client's shape an error message shows at most
_LENGTH = struct.Struct("<I")
_NOT_INTEGERS = {"f": "numbers with a fraction or exponent", "b": "booleans", "U": "strings",
                 "O": "values that are not all integers 0..255"}


def shown_shape(shape: Sequence) -> str:
    """A client's shape for an error message, cut after a few dimensions."""
    shape = list(shape)
    if len(shape) <= _DIMS_SHOWN:
        return str(shape)
    return f"{shape[:_DIMS_SHOWN]}... ({len(shape)} dimensions)"


@dataclass(frozen=True, slots=True)
class InputTensor:
    """What the request's one input holds: ``count`` images, as pixels or ``encoded``."""

    count: int
    encoded: bool = False

    @property
    def pixel_bytes(self) -> int:
        """Bytes of the pixels of ``count`` images (UINT8)."""
        return self.count * IMAGE_BYTES

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.count,) if self.encoded else (self.count, *contract.INPUT_SHAPE)


@dataclass(frozen=True)
class OutputRequest:
    """What the client asked back: the tensor (``top_k`` None) or the top k as strings."""

    top_k: int | None = None


def check_input(count: int, names: Sequence[str], datatype: str, shape: Sequence[int],
                max_images: int) -> InputTensor:
    """The request's one input, from the number of its inputs, their first names (at least
    ``NAMES_QUOTED``) and the first one's datatype and shape; InvalidInputError naming the
    problem: missing or extra inputs, wrong name, datatype or shape, zero images or more
    than ``max_images``."""
    if count == 0:
        raise InvalidInputError(
            f"missing input: the request has no inputs; expected '{contract.INPUT_NAME}' "
            f"{INPUT_DATATYPE} {list(INPUT_SHAPE)}"
        )
    if count > 1:
        listed = ", ".join(quoted(name) for name in names[:NAMES_QUOTED])
        raise InvalidInputError(
            f"expected exactly one input '{contract.INPUT_NAME}', got {count}: {listed}"
        )
    if names[0] != contract.INPUT_NAME:
        raise InvalidInputError(
            f"unknown input {quoted(names[0])}: the model's only input is '{contract.INPUT_NAME}'"
        )
    encoded = datatype == ENCODED_DATATYPE
    if datatype != INPUT_DATATYPE and not encoded:
        shown = datatype if datatype in KNOWN_DATATYPES else quoted(datatype)
        raise InvalidInputError(
            f"input '{contract.INPUT_NAME}' has datatype {shown}; expected {INPUT_DATATYPE} "
            f"(pixels) or {ENCODED_DATATYPE} (encoded images)"
        )
    if encoded:
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise InvalidInputError(
                f"input '{contract.INPUT_NAME}' of datatype {ENCODED_DATATYPE} has shape "
                f"{shown_shape(shape)}; expected [N] or [N, 1] (N encoded images)"
            )
    elif len(shape) != 4 or tuple(shape[1:]) != contract.INPUT_SHAPE:
        raise InvalidInputError(
            f"input '{contract.INPUT_NAME}' has shape {shown_shape(shape)}; expected "
            f"[N, {', '.join(map(str, contract.INPUT_SHAPE))}] (N images, HWC, RGB)"
        )
    count = int(shape[0])
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
    return InputTensor(count, encoded)


def check_pixel_values(values: np.ndarray, where: str) -> np.ndarray:
    """Integer ``values`` (any integer dtype) as uint8, or InvalidInputError naming the
    first value outside 0..255 found in ``where``."""
    if values.dtype.kind not in "iu":
        found = _NOT_INTEGERS.get(values.dtype.kind, "values that are not integers")
        raise InvalidInputError(
            f"input '{contract.INPUT_NAME}' is {INPUT_DATATYPE}: {where} must hold integers "
            f"0..255, got {found}"
        )
    if values.size:
        low, high = int(values.min()), int(values.max())
        if high > 255 or low < 0:
            bad = high if high > 255 else low
            raise InvalidInputError(
                f"input '{contract.INPUT_NAME}' is {INPUT_DATATYPE}: {where} holds {bad}, "
                f"{'above 255' if bad > 255 else 'below 0'}"
            )
    return values.astype(np.uint8, copy=False)


def requested_output(count: int, names: Sequence[str],
                     classification: object | None) -> OutputRequest:
    """The form of the output asked for, from the number of requested outputs, their first
    names (at least ``NAMES_QUOTED``) and the first one's ``classification`` parameter
    (None when absent)."""
    if count == 0:
        return OutputRequest()
    if count > 1:
        listed = ", ".join(quoted(name) for name in names[:NAMES_QUOTED])
        raise InvalidInputError(
            f"expected at most one requested output '{contract.OUTPUT_NAME}', "
            f"got {count}: {listed}"
        )
    if names[0] != contract.OUTPUT_NAME:
        raise InvalidInputError(
            f"unknown output {quoted(names[0])}: the model's only output is "
            f"'{contract.OUTPUT_NAME}'"
        )
    if classification is None:
        return OutputRequest()
    if isinstance(classification, bool) or not isinstance(classification, int):
        raise InvalidInputError(
            f"output parameter '{CLASSIFICATION_PARAMETER}' must be an int64 (the number of "
            f"classes to return), got {quoted(classification)}"
        )
    if classification < 0:
        raise InvalidInputError(
            f"output parameter '{CLASSIFICATION_PARAMETER}' must be >= 1, got {classification}"
        )
    if classification == 0:
        return OutputRequest()
    return OutputRequest(top_k=min(classification, contract.NUM_CLASSES))


def every_row(result: InferenceResult) -> np.ndarray:
    """The result's probabilities, a row for every image of the request; InvalidInputError
    naming the images that did not decode (a tensor answer cannot leave one out)."""
    if result.failures:
        raise InvalidInputError(
            f"input '{contract.INPUT_NAME}': {failures_message(result.failures)}")
    return result.probabilities


def serialize_bytes(elements: Sequence[bytes]) -> bytes:
    """BYTES tensor elements in Triton's raw form: 4-byte little-endian length + bytes each."""
    return b"".join([part for e in elements for part in (_LENGTH.pack(len(e)), e)])


def deserialize_bytes(data: bytes | memoryview, count: int | None = None) -> list[bytes]:
    """The elements of a BYTES tensor in Triton's raw form (``serialize_bytes``).
    ``count``: the number the tensor's shape says, at most that many are read, and a
    different number is an error. ValueError naming the problem."""
    elements: list[bytes] = []
    offset, size = 0, len(data)
    while offset < size:
        if count is not None and len(elements) == count:
            raise ValueError(f"{size - offset} bytes after the {count} elements its shape says")
        if offset + 4 > size:
            raise ValueError(f"truncated BYTES element length at byte {offset}")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += 4
        if offset + length > size:
            raise ValueError(f"truncated BYTES element {len(elements)}: {length} bytes "
                             f"declared, {size - offset} left")
        elements.append(bytes(data[offset:offset + length]))
        offset += length
    if count is not None and len(elements) != count:
        raise ValueError(f"{len(elements)} elements, its shape says {count}")
    return elements


def classification_strings(
    probabilities: np.ndarray, top_k: int, labels: Sequence[str]
) -> list[bytes]:
    """Row-major [N, k] ``score:index:label`` strings, most probable first in each row."""
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    scores = np.take_along_axis(probabilities, order, axis=1).tolist()
    return [f"{score:f}:{index}:{labels[index]}".encode()
            for row_scores, row in zip(scores, order.tolist())
            for score, index in zip(row_scores, row)]
