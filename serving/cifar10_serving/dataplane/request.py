"""What a door hands the data plane, and what it gets back: no protobuf, no JSON, no transport.

A door (a gRPC servicer, later an HTTP route) turns its message into an ``InferenceRequest``
and the ``InferenceResult`` back into its answer. The images come in one of three forms:

* a uint8 array ``[N, 32, 32, 3]``: pixels ready for the model (raw 32x32 RGB images);
* a sequence of ``ImageInput``s, each encoded bytes (PNG, JPEG, ...) or a ``RawImage`` of any
  size: decoded by the data plane off the event loop, each image on its own (one that does
  not decode gets its own error; the others are classified);
* a ``Conversion``: a door's own encoding (a typed tensor, a JSON document), converted by
  the data plane once the request is admitted (on the event loop when it is cheap, else on
  a decode thread) to one of the two forms above.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from cifar10_core.errors import InvalidInputError
from cifar10_serving.onnx_model import ModelInfo


@dataclass(frozen=True, slots=True)
class RawImage:
    """Pixels as rows of ``width`` x ``channels`` bytes (1, 3 or 4 channels), any size."""

    data: bytes
    height: int
    width: int
    channels: int


ImageInput = bytes | RawImage


@dataclass(frozen=True, slots=True)
class Conversion:
    """``convert()`` returns uint8 ``[N, 32, 32, 3]`` or the ``ImageInput``s to decode, or
    raises InvalidInputError; ``cheap``: run it on the event loop (a small tensor), else on a
    decode thread."""

    convert: Callable[[], np.ndarray | Sequence[ImageInput]]
    cheap: bool = False


Images = np.ndarray | Sequence[ImageInput] | Conversion


def deadline_after(seconds: float | None) -> float | None:
    """A ``time.monotonic()`` deadline ``seconds`` from now (None stays None)."""
    return None if seconds is None else time.monotonic() + seconds


@dataclass(slots=True)
class InferenceRequest:
    """One request, as every door hands it over.

    ``model_name``/``model_version``: '' means the default model / its newest version.
    ``deadline``: a ``time.monotonic()`` instant (``deadline_after``), None for none.
    ``wire_bytes``: the request's size as received, counted by admission control.
    """

    images: Images
    model_name: str = ""
    model_version: str = ""
    deadline: float | None = None
    request_id: str = ""
    wire_bytes: int = 0


@dataclass(frozen=True, slots=True)
class ImageFailure:
    """An image of the request that could not be classified (the others were)."""

    index: int
    error: InvalidInputError


@dataclass(frozen=True, slots=True)
class InferenceResult:
    """Probabilities (float32 ``[M, 10]``, label order) for the request's classified images,
    in request order, computed by ``model``; ``failures`` names the images left out."""

    probabilities: np.ndarray
    model: ModelInfo
    failures: tuple[ImageFailure, ...] = field(default=())
