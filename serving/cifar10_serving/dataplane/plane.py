"""The data plane: a request's whole life, from the model it names to its probabilities.

Every door (the gRPC servicers; any other) turns its message into an ``InferenceRequest``,
awaits ``DataPlane.infer`` and turns the ``InferenceResult`` into its answer; errors are
``cifar10_core.errors.ServingError``s, which each door maps to its status codes in one
place. Inside, in order: the model is selected (``ModelSet``), the request is admitted
(``Admission``: bounded requests and bytes in flight), its images are decoded off the event
loop when they need it (``Decoder``), queued for a dynamic batch (``Batcher``), run by the
model on a batcher thread, and answered, within the request's deadline; a caller that
leaves cancels its work. Knows no transport, no metrics library and no Settings object:
``cifar10_serving.assembly`` builds it and wires its ``Hooks`` to Prometheus. A request
that a door traces or logs is reported to its ``Observation``
(``cifar10_serving.dataplane.observation``).

``infer`` is awaited on the server's event loop (admission is not thread-safe by design).
A request runs on one model, the one selected when it arrived: after a hot swap, requests
selected before it still run on the old model, all of their rows, and the answer names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cifar10_core import contract
from cifar10_core.errors import InvalidInputError
from cifar10_serving.dataplane.admission import Admission
from cifar10_serving.dataplane.batching import Batcher, RunTiming
from cifar10_serving.dataplane.decoding import Decoder, WorkCheck
from cifar10_serving.dataplane.models import ModelSet
from cifar10_serving.dataplane.observation import OBSERVED, Observation
from cifar10_serving.dataplane.repository import BatchingConfig
from cifar10_serving.dataplane.request import Conversion, ImageInput, InferenceRequest, InferenceResult
from cifar10_serving.onnx_model import ModelInfo, OnnxModel

PRELOAD_AFTER_S = 0.2
"""Seconds after start() at which Pillow is imported: soon, but not before the port opens."""

_UNOBSERVED = contextlib.nullcontext()


@dataclass(frozen=True)
class Limits:
    """What one request, and all of them in flight, may hold."""

    max_images_per_request: int = 1024
    max_image_pixels: int = 16_000_000  # one decoded image
    max_request_pixels: int = 64_000_000  # every image of one request decoded by Pillow
    max_inflight_requests: int = 256
    max_inflight_bytes: int = 128 * 1024 * 1024


@dataclass(frozen=True)
class Batching:
    """The dynamic batcher's settings (Triton's names where it has them): the server's, or
    one model version's (``overridden``)."""

    max_batch_size: int = 32  # largest merged model run
    max_queue_delay_s: float = 0.0
    max_queue_size: int = 2048  # images waiting, at most (per model version)
    instances: int = 1  # model runs at a time

    def overridden(self, config: BatchingConfig) -> Batching:
        """A model's: these settings with its config.json's where it gives them; its
        instances at most the server's (the runs of every model together)."""
        return dataclasses.replace(
            self, max_batch_size=config.max_batch_size or self.max_batch_size,
            instances=min(config.instances or self.instances, self.instances))


def _ignore(*_args: object) -> None:
    pass


@dataclass(frozen=True)
class Hooks:
    """What the data plane reports, for metrics (called on the thread it happens on; cheap)."""

    # images in one model run, and the model version that ran them (batcher thread)
    on_batch: Callable[[ModelInfo, int], None] = _ignore
    # images answered for one request, and the model version that computed them
    on_images: Callable[[ModelInfo, int], None] = _ignore


class DataPlane:
    """Admission, decoding and dynamic batching in front of the models of a ``ModelSet``.

    Each model version has a batcher queue of its own, its batch size and instances the
    server's ``batching`` or its config.json's (``batching_of``); admission, the decode
    threads and the batcher workers are shared: at most ``batching.instances`` runs at once,
    whatever the number of models, so the CPUs are never oversubscribed (a lone run takes
    every intra-op thread, runs beside others a share: ``onnx_model``'s elastic threads).
    """

    def __init__(self, models: ModelSet, *, limits: Limits = Limits(),
                 batching: Batching = Batching(), decode_threads: int = 1,
                 hooks: Hooks = Hooks()) -> None:
        self.models = models
        self.limits = limits
        self.batching = batching
        self.admission = Admission(limits.max_inflight_requests, limits.max_inflight_bytes)
        self._decoder = Decoder(decode_threads, limits.max_image_pixels, limits.max_request_pixels)
        self._hooks = hooks
        # the model versions share the workers: at most batching.instances runs at once
        self._batcher = Batcher(self._run, max_batch_size=batching.max_batch_size,
                                max_queue_delay=batching.max_queue_delay_s,
                                max_queue_size=batching.max_queue_size,
                                workers=batching.instances, limits_of=self._limits_of)

    def batching_of(self, model: OnnxModel) -> Batching:
        """The dynamic batching of ``model``'s runs: the server's, with its config.json's."""
        return self.batching.overridden(self.models.batching_of(model))

    def _limits_of(self, model: OnnxModel) -> tuple[int, int]:
        batching = self.batching_of(model)
        return batching.max_batch_size, batching.instances

    # -- a request ----------------------------------------------------------------------

    async def infer(self, request: InferenceRequest) -> InferenceResult:
        """Probabilities for the request's images. Raises InvalidInputError (bad images, an
        unknown model: UnknownModelError), OverloadedError (in-flight limits, a full queue),
        UnavailableError (shutting down), DeadlineExceededError, NonFiniteOutputError."""
        observed = OBSERVED.get()
        if observed is not None:
            observed.identify(request.request_id)
        model = self.models.select(request.model_name, request.model_version)
        if observed is not None:
            observed.selected(model.info)
        with _stage(observed, "admission"):
            ticket = self.admission.admit(request.wire_bytes)
        with ticket:
            images, deadline, failures = request.images, request.deadline, ()
            # raw pixels of the model's size: nothing to decode, no stage
            with _stage(None if isinstance(images, np.ndarray) else observed, "decode"):
                if isinstance(images, Conversion):
                    images = images.convert() if images.cheap else await self._decoder.run(
                        functools.partial(_convert, images), deadline)
                if isinstance(images, np.ndarray):
                    batch = self._checked(images)
                else:
                    self._check_count(len(images))
                    batch, failures = await self._decoder.run(
                        functools.partial(self._decoder.decode_each, images), deadline)
            if observed is None:
                probabilities = await self._batcher.submit(batch, deadline, key=model)
            else:
                observed.count(len(batch) + len(failures))
                probabilities = await self._observed_submit(batch, deadline, model, observed)
        self._hooks.on_images(model.info, len(probabilities))
        return InferenceResult(probabilities, model.info, failures)

    async def _observed_submit(self, batch: np.ndarray, deadline: float | None,
                               model: OnnxModel, observed: Observation) -> np.ndarray:
        timing = RunTiming()
        try:
            probabilities = await self._batcher.submit(batch, deadline, key=model, timing=timing)
        except BaseException as exc:
            observed.batched(timing, exc)
            raise
        observed.batched(timing, None)
        return probabilities

    def _check_count(self, n: int) -> None:
        if n == 0:
            raise InvalidInputError("the request holds no images")
        if n > self.limits.max_images_per_request:
            raise InvalidInputError(
                f"too many images in one request: {n} > {self.limits.max_images_per_request}")

    def _checked(self, images: np.ndarray) -> np.ndarray:
        """``images`` as a contiguous uint8 [N, 32, 32, 3] array of an allowed count."""
        if images.dtype != np.uint8:
            raise InvalidInputError(f"images must be uint8, got {images.dtype}")
        if images.ndim != 4 or images.shape[1:] != contract.INPUT_SHAPE:
            raise InvalidInputError(f"images must have shape [N, 32, 32, 3], got {list(images.shape)}")
        self._check_count(len(images))
        return images if images.flags.c_contiguous else np.ascontiguousarray(images)

    def _run(self, batch: np.ndarray, model: OnnxModel) -> np.ndarray:
        # All the CPUs for a lone request; a busy server's runs take a share of them, since
        # other runs (other instances, other workers) are likely running beside this one.
        probabilities = model.predict(batch, alone=self.admission.requests <= 1)
        self._hooks.on_batch(model.info, len(batch))
        return probabilities

    # -- state ----------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Images waiting for the models right now (every version's queue)."""
        return self._batcher.queued

    @property
    def ready(self) -> bool:
        """Serving: not shutting down."""
        return not self.admission.closed

    @property
    def inflight(self) -> int:
        """Requests admitted and not yet answered."""
        return self.admission.requests

    # -- lifecycle (cifar10_serving.lifecycle drives it) -------------------------------------

    async def start(self) -> None:
        """Start the model file watcher; import Pillow a moment after the port opens."""
        self.models.start()
        asyncio.get_running_loop().call_later(PRELOAD_AFTER_S, self._preload)

    def _preload(self) -> None:
        if self.ready:
            self._decoder.preload()

    def close(self) -> None:
        """Refuse every new request (UnavailableError); those admitted are answered."""
        self.admission.close()

    async def drained(self, timeout: float) -> bool:
        """Wait (polling) until no admitted request is left, at most ``timeout``; True if none."""
        end = time.monotonic() + timeout
        while self.inflight and time.monotonic() < end:
            await asyncio.sleep(0.005)
        return not self.inflight

    async def stop(self, timeout: float | None = None) -> None:
        """Stop reloading, finish the queued work, end the threads."""
        self.close()
        await self.models.stop(timeout)
        await self._batcher.close(timeout)
        self._decoder.close()


def _stage(observed: Observation | None, name: str) -> contextlib.AbstractContextManager[object]:
    return _UNOBSERVED if observed is None else observed.stage(name)


def _convert(conversion: Conversion, check: WorkCheck) -> np.ndarray | Sequence[ImageInput]:
    check()  # the deadline may have passed while the request waited for a decode thread
    return conversion.convert()
