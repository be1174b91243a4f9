"""What the data plane tells about the request it serves, for tracing and the request log.

A door that traces or logs a request sets ``OBSERVED`` (a context variable: it follows the
request's task and whatever that task awaits) to the request's ``Observation`` before it
hands the request over; the data plane names the request's id, model and image count to it
and brackets its stages (admission, decode, queue wait, model run). Unset, the default,
nothing is reported and nothing is timed. Knows no tracing library
(``cifar10_serving.observability.requests`` implements it).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import Protocol

from cifar10_serving.dataplane.batching import RunTiming
from cifar10_serving.onnx_model import ModelInfo


class Observation(Protocol):
    """One request's observer (called on the event loop)."""

    def identify(self, request_id: str) -> None:
        """The request's id ('' for none)."""

    def selected(self, model: ModelInfo) -> None:
        """The model selected for the request."""

    def count(self, images: int) -> None:
        """The request's images, once read (those that failed to decode included)."""

    def stage(self, name: str) -> AbstractContextManager[object]:
        """Brackets a stage run on the event loop (``admission``, ``decode``)."""

    def batched(self, timing: RunTiming, error: BaseException | None) -> None:
        """The request's time in the batcher (queue wait, then model run), once answered or
        failed there."""


OBSERVED: ContextVar[Observation | None] = ContextVar("cifar10_observed", default=None)
