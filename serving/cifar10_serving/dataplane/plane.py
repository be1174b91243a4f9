"""The transport-free serving core, shared by every servicer (cifar10.v2, Open Inference).

A servicer checks its request (``core.select`` for the model it names; its own decoder for
the image count, with ``core.max_images_per_request``), turns its protobuf into a uint8
array and calls the core; the core raises ``cifar10_core.errors.ServingError`` subclasses,
which ``cifar10_serving.grpc_api.status`` maps to status codes. It knows no settings object and no
metrics library: ``cifar10_serving.assembly`` builds it from ``Settings`` and wires its
``CoreHooks`` to Prometheus.

Stable API (keep it small)::

    core = ServingCore(model, load_model=..., model_path=..., max_batch_size=..., ...)
    await core.start()                           # on the server's event loop: reload watcher
    core.ready                                   # True while serving (loaded, warmed, not draining)
    core.info                                    # ModelInfo of the current model (name, version,
                                                 #   labels, metadata, input/output TensorSpec)
    core.max_batch_size, core.max_queue_delay_s, core.instances   # the batcher's (ModelConfig)
    core.max_images_per_request, core.max_image_pixels            # request limits
    core.max_request_pixels                      # pixels one request may decode in all
    with core.admit(nbytes) as ticket: ...       # before decoding: OverloadedError past the
                                                 #   in-flight limits (cifar10_serving.dataplane.admission)
    out = await core.offload(work, deadline)     # blocking decode work on the decode threads;
                                                 #   work(check): check() raises once the
                                                 #   deadline passed or the caller left
    core.decoding                                # offloaded work running right now
    core.check_model(name, version)              # -> ModelInfo, or UnknownModelError ('' = any)
    model = core.select(name, version)           # the same check; pins the current model
    pred = await core.classify(images, model=model, deadline=..., admitted=True)
    pred.probabilities                           # float32 [N, 10], finite, label order
    pred.model                                   # ModelInfo of the model that computed every row
    deadline_after(seconds)                      # grpc's context.time_remaining() -> deadline
    core.request_reload()                        # SIGHUP: reload in the background
    core.reload()                                # sync; True if swapped, False if rejected
    core.begin_shutdown()                        # new admit()/classify() -> UnavailableError
    await core.refusals_ended(quiet_s, timeout)  # shutdown: until no refusal for quiet_s
    await core.stop()                            # finish the queued work, stop the watcher

A request runs on one model: the one current when it was admitted (``select``, or
``classify`` without ``model``). After a hot swap, requests admitted before it still run on
the old model, all of their rows, and the answer names it; the batcher never merges requests
of two models into one run.

``classify`` may be awaited from any asyncio event loop; the model runs on the batcher's
worker thread, never on the loop; Pillow decoding runs on the core's decode threads
(``offload``), never on the loop; ``admit`` is for the server's loop only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar
from dataclasses import dataclass

import numpy as np

from cifar10_core import contract, images
from cifar10_core.errors import (
    DeadlineExceededError,
    InvalidInputError,
    ModelLoadError,
    UnavailableError,
    UnknownModelError,
    quoted,
)
from cifar10_serving.dataplane.admission import Admission, Ticket
from cifar10_serving.dataplane.batching import Batcher
from cifar10_serving.onnx_model import FileSignature, ModelInfo, OnnxModel

log = logging.getLogger(__name__)

_IMAGE_SHAPE = contract.INPUT_SHAPE
PRELOAD_AFTER_S = 0.2
"""Seconds after start() at which Pillow is imported (``cifar10_core.images.preload``)."""


def deadline_after(seconds: float | None) -> float | None:
    """A ``time.monotonic()`` deadline ``seconds`` from now (None stays None)."""
    return None if seconds is None else time.monotonic() + seconds


@dataclass(frozen=True, slots=True)
class Prediction:
    probabilities: np.ndarray  # float32 [N, 10]
    model: ModelInfo


T = TypeVar("T")


class WorkCheck:
    """``check()`` for offloaded work: raises DeadlineExceededError once the deadline has
    passed or the caller has gone (cancelled), so a long decode stops between images."""

    __slots__ = ("deadline", "abandoned")

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.abandoned = False

    def __call__(self) -> None:
        if self.abandoned:
            raise DeadlineExceededError("the caller has gone; work stopped")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise DeadlineExceededError("deadline passed while decoding; work stopped")


def _ignore(*_args) -> None:
    pass


@dataclass(frozen=True)
class CoreHooks:
    """What the core reports, for metrics at the edge (each called on the thread it happens on;
    keep them cheap)."""

    on_batch: Callable[[int], None] = _ignore  # images in one model run (batcher thread)
    on_images: Callable[[int], None] = _ignore  # images answered for one request
    on_model: Callable[[ModelInfo], None] = _ignore  # the model served, at start and each swap
    on_reload: Callable[[bool], None] = _ignore  # a reload: True swapped, False rejected


class ServingCore:
    """The current model behind a dynamic batcher, with hot reload and readiness."""

    def __init__(
        self,
        model: OnnxModel,
        *,
        load_model: Callable[[str], OnnxModel],
        model_path: str,
        max_batch_size: int = 32,
        max_queue_delay_s: float = 0.0,
        max_queue_size: int = 2048,
        instances: int = 1,
        max_images_per_request: int = 1024,
        max_image_pixels: int = 16_000_000,
        max_request_pixels: int = 64_000_000,
        max_inflight_requests: int = 256,
        max_inflight_bytes: int = 128 * 1024 * 1024,
        decode_threads: int = 1,
        reload_interval_s: float = 0.0,
        hooks: CoreHooks | None = None,
    ):
        """``model``: loaded and warm; ``load_model(path)`` loads its replacement on reload
        (raising ModelLoadError); ``model_path``: the file watched and reloaded."""
        self._model = model
        self._load_model = load_model
        self.model_path = model_path
        self.max_batch_size = max_batch_size  # the batcher's: largest merged model run
        self.max_queue_delay_s = max_queue_delay_s
        self.instances = instances  # model runs at a time (the batcher's workers)
        self.max_images_per_request = max_images_per_request
        self.max_image_pixels = max_image_pixels
        self.max_request_pixels = max_request_pixels
        self.admission = Admission(max_inflight_requests, max_inflight_bytes)
        self._decode_pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="decode")
        self._decoding_lock = threading.Lock()
        self.decoding = 0  # offloaded work running on a decode thread right now
        self.reload_interval_s = reload_interval_s
        self._hooks = hooks or CoreHooks()
        self._draining = False
        self.stopping: asyncio.Event | None = None  # set at begin_shutdown (made in start())
        self._inflight = 0  # classify() calls admitted and not yet answered
        self._reload_lock = threading.Lock()
        self._rejected: FileSignature | None = None
        self._watcher: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reload_task: asyncio.Future | None = None
        self._batcher = Batcher(
            self._run,
            max_batch_size=max_batch_size,
            max_queue_delay=max_queue_delay_s,
            max_queue_size=max_queue_size,
            on_batch=self._hooks.on_batch,
            workers=instances,
        )
        self._hooks.on_model(model.info)

    # -- information --------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        return self._model.info

    @property
    def model(self) -> OnnxModel:
        return self._model

    @property
    def queued(self) -> int:
        """Images waiting for the model right now."""
        return self._batcher.queued

    @property
    def ready(self) -> bool:
        return not self._draining

    @property
    def inflight(self) -> int:
        """Requests admitted and not yet answered, and classify() calls in flight (all APIs;
        0 when nothing is left to answer)."""
        return self._inflight + self.admission.requests

    async def drained(self, timeout: float) -> bool:
        """Wait (polling, for shutdown) until no admitted request is left; True if none."""
        end = time.monotonic() + timeout
        while self.inflight and time.monotonic() < end:
            await asyncio.sleep(0.005)
        return not self.inflight

    async def refusals_ended(self, quiet_s: float, timeout: float) -> bool:
        """After begin_shutdown: wait (polling) until no request was refused for ``quiet_s``
        (no client is sending any more), at most ``timeout``; True if so.

        The quiet time counts from this call at the earliest: clients whose calls were all in
        flight until now were refused nothing, yet send their next call the moment they are
        answered (a stop right then would cancel those calls in grpc's hands)."""
        start = time.monotonic()
        end = start + timeout
        while time.monotonic() - max(self.admission.last_refusal, start) < quiet_s:
            if time.monotonic() >= end:
                return False
            await asyncio.sleep(0.005)
        return True

    @property
    def batcher(self) -> Batcher:
        return self._batcher

    def select(self, name: str = "", version: str = "") -> OnnxModel:
        """The current model if ``name``/``version`` match it ('' matches any), else
        UnknownModelError. Hand it to ``classify`` to have the request computed by it."""
        model = self._model  # one read: the model checked is the model returned
        info = model.info
        if name and name != info.name:
            raise UnknownModelError(
                f"unknown model {quoted(name)}: this server serves {info.name!r}"
            )
        if version and version != info.version:
            raise UnknownModelError(
                f"unknown version {quoted(version)} of model {info.name!r}: this server serves "
                f"version {info.version!r}"
            )
        return model

    def check_model(self, name: str = "", version: str = "") -> ModelInfo:
        """The served model's info if ``name``/``version`` match it ('' matches any)."""
        return self.select(name, version).info

    def check_images(self, images: np.ndarray) -> np.ndarray:
        """``images`` as a contiguous uint8 [N, 32, 32, 3] array (the count is the decoders'
        to check, against ``max_images_per_request``)."""
        if not isinstance(images, np.ndarray):
            raise InvalidInputError(f"images must be a numpy array, got {type(images).__name__}")
        if images.dtype != np.uint8:
            raise InvalidInputError(f"images must be uint8, got {images.dtype}")
        if images.ndim != 4 or images.shape[1:] != _IMAGE_SHAPE:
            raise InvalidInputError(
                f"images must have shape [N, 32, 32, 3], got {list(images.shape)}"
            )
        if not images.flags.c_contiguous:
            images = np.ascontiguousarray(images)
        return images

    # -- admission and decoding -----------------------------------------------------------

    def admit(self, nbytes: int) -> Ticket:
        """Admit a request of ``nbytes`` before decoding it (a context manager; release when
        answered): OverloadedError past the in-flight limits, UnavailableError once shutting
        down."""
        return self.admission.admit(nbytes)

    async def offload(self, work: Callable[[WorkCheck], T], deadline: float | None) -> T:
        """``work(check)`` on a decode thread (off the event loop). ``check()`` raises
        DeadlineExceededError once ``deadline`` passed or this call was cancelled: call it
        between units of work."""
        check = WorkCheck(deadline)
        future = asyncio.get_running_loop().run_in_executor(self._decode_pool, self._work, work,
                                                            check)
        try:
            return await future
        except asyncio.CancelledError:
            check.abandoned = True
            raise

    def _work(self, work: Callable[[WorkCheck], T], check: WorkCheck) -> T:
        with self._decoding_lock:
            self.decoding += 1
        try:
            return work(check)
        finally:
            with self._decoding_lock:
                self.decoding -= 1

    # -- inference ----------------------------------------------------------------------

    async def classify(
        self,
        images: np.ndarray,
        *,
        model: OnnxModel | None = None,
        deadline: float | None = None,
        admitted: bool = False,
    ) -> Prediction:
        """Probabilities for uint8 [N, 32, 32, 3] images, computed in a dynamic batch.

        ``model``: the one ``select`` returned (None: the current one); every row is computed
        by it, even across a hot swap. ``deadline`` is a ``time.monotonic()`` instant (see
        ``deadline_after``). Raises InvalidInputError, UnavailableError (shutting down),
        OverloadedError (queue full), DeadlineExceededError, or NonFiniteOutputError (a
        broken model; INTERNAL). ``admitted``: the request holds a ticket (``admit``), taken
        before shutdown began: it is answered, not refused.
        """
        if self._draining and not admitted:
            raise UnavailableError("server is shutting down")
        images = self.check_images(images)
        if model is None:
            model = self._model
        self._inflight += 1
        try:
            probabilities = await self._batcher.submit(images, deadline, key=model)
        finally:
            self._inflight -= 1
        self._hooks.on_images(len(probabilities))
        return Prediction(probabilities, model.info)

    def _run(self, batch: np.ndarray, model: OnnxModel) -> np.ndarray:
        # All the CPUs for a lone request; a busy server's runs take a share of them, since
        # other runs (other instances, other workers) are likely running beside this one.
        alone = self._inflight <= 1 and self.admission.requests <= 1
        return model.predict(batch, alone=alone)

    # -- hot reload -----------------------------------------------------------------------

    def reload(self) -> bool:
        """Load the model file beside the current one and swap if it is valid.

        Blocking (run it off the event loop). Returns True if swapped; on a bad file logs
        the reason, keeps the current model and returns False.
        """
        with self._reload_lock:
            old = self._model
            try:
                new = self._load_model(self.model_path)
            except ModelLoadError as exc:
                try:
                    self._rejected = FileSignature.of(os.stat(self.model_path))
                except OSError:
                    self._rejected = None
                log.error("model reload rejected, still serving %s version %s: %s",
                          old.name, old.version, exc)
                self._hooks.on_reload(False)
                return False
            self._model = new  # atomic swap; requests admitted before it keep `old`
            self._rejected = None
            if new.name != old.name:
                log.warning("model name changed on reload: %s -> %s", old.name, new.name)
            log.info("model swapped: %s version %s -> %s version %s",
                     old.name, old.version, new.name, new.version)
            self._hooks.on_reload(True)
            self._hooks.on_model(new.info)
            return True

    def _file_changed(self) -> bool:
        try:
            current = FileSignature.of(os.stat(self.model_path))
        except OSError:
            return False  # missing for now (being replaced?): keep serving, look again later
        return current != self._model.signature and current != self._rejected

    def request_reload(self) -> None:
        """Reload in the background (for SIGHUP). Call on the core's event loop."""
        if self._draining:
            return
        log.info("reload requested")
        if self._reload_task is None or self._reload_task.done():
            loop = self._loop or asyncio.get_running_loop()
            self._reload_task = loop.run_in_executor(None, self.reload)

    async def _watch(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            try:
                if self._file_changed() and not self._draining:
                    log.info("model file %s changed; reloading", self.model_path)
                    self._reload_task = loop.run_in_executor(None, self.reload)
                    await self._reload_task
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("model file watcher failed; still serving")

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the model file watcher on the running loop (if reload_interval_s > 0)."""
        self._loop = asyncio.get_running_loop()
        # Pillow imports on a decode thread, a moment after the port opens (not before: a
        # shorter cold start), so that the first encoded image does not wait for it.
        self._loop.call_later(PRELOAD_AFTER_S, self._preload)
        if self.stopping is None:
            self.stopping = asyncio.Event()
        if self.reload_interval_s > 0 and self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(self.reload_interval_s))

    def _preload(self) -> None:
        if not self._draining:
            self._decode_pool.submit(images.preload)

    def begin_shutdown(self) -> None:
        """From now on admit() and classify() raise UnavailableError; admitted requests and
        queued work still complete."""
        self._draining = True
        self.admission.close()
        if self.stopping is not None:
            self.stopping.set()  # streams stop reading (cifar10_serving.grpc_api.streams)

    async def stop(self, timeout: float | None = None) -> None:
        """Stop the watcher and the batcher after finishing the queued requests."""
        self._draining = True
        if self._watcher is not None:
            self._watcher.cancel()
            try:
                await self._watcher
            except (asyncio.CancelledError, Exception):
                pass
            self._watcher = None
        if self._reload_task is not None and not self._reload_task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._reload_task), timeout)
            except Exception:
                pass
        await self._batcher.close(timeout)
        self._decode_pool.shutdown(wait=False, cancel_futures=True)
