"""The transport-free serving core, shared by every servicer (cifar10.v2, Open Inference).

A servicer turns its protobuf into a uint8 array and calls the core; the core raises
``cifar10_core.errors.ServingError`` subclasses, which ``cifar10_serving.grpc_status`` maps to status codes.

Stable API (keep it small)::

    core = ServingCore.load(settings, metrics)   # sync; raises ModelLoadError
    await core.start()                           # on the server's event loop: reload watcher
    core.ready                                   # True while serving (loaded, warmed, not draining)
    core.info                                    # ModelInfo of the current model (name, version,
                                                 #   labels, metadata, input/output TensorSpec)
    core.max_batch_size                          # the batcher's max batch (for Triton's ModelConfig)
    core.max_images_per_request
    core.check_model(name, version)              # -> ModelInfo, or UnknownModelError ('' = any)
    core.check_images(array)                     # -> contiguous uint8 [N,32,32,3] or InvalidInputError
    pred = await core.classify(images, deadline=..., model_name=..., model_version=...)
    pred.probabilities                           # float32 [N, 10], finite, label order
    pred.model                                   # ModelInfo of the model that computed them
    deadline_after(seconds)                      # grpc's context.time_remaining() -> deadline
    core.request_reload()                        # SIGHUP: reload in the background
    core.reload()                                # sync; True if swapped, False if rejected
    core.begin_shutdown()                        # new classify() -> UnavailableError
    await core.stop()                            # finish the queued work, stop the watcher

``classify`` may be awaited from any asyncio event loop; the model runs on the batcher's
worker thread, never on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from cifar10_core import contract
from cifar10_serving.batching import Batcher
from cifar10_core.errors import (
    InvalidInputError,
    ModelLoadError,
    UnavailableError,
    UnknownModelError,
)
from cifar10_serving.metrics import Metrics
from cifar10_serving.model import FileSignature, ModelInfo, OnnxModel, TensorSpec  # noqa: F401
from cifar10_serving.settings import Settings

log = logging.getLogger(__name__)

_IMAGE_SHAPE = contract.INPUT_SHAPE


def deadline_after(seconds: float | None) -> float | None:
    """A ``time.monotonic()`` deadline ``seconds`` from now (None stays None)."""
    return None if seconds is None else time.monotonic() + seconds


@dataclass(frozen=True, slots=True)
class Prediction:
    probabilities: np.ndarray  # float32 [N, 10]
    model: ModelInfo


class ServingCore:
    """The current model behind a dynamic batcher, with hot reload and readiness."""

    def __init__(self, settings: Settings, model: OnnxModel, metrics: Metrics | None = None):
        self.settings = settings
        self.metrics = metrics
        self._model = model
        self._draining = False
        self._inflight = 0  # classify() calls admitted and not yet answered
        self._reload_lock = threading.Lock()
        self._rejected: FileSignature | None = None
        self._watcher: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reload_task: asyncio.Future | None = None
        self.max_images_per_request = settings.max_images_per_request
        self._count_images = metrics.images.inc if metrics is not None else None
        self._batcher = Batcher(
            self._run,
            max_batch_size=settings.max_batch_size,
            max_queue_delay=settings.max_queue_delay_ms / 1000.0,
            max_queue_size=settings.max_queue_size,
            on_batch=metrics.batch_size.observe if metrics else None,
            workers=settings.instances,
        )
        if metrics is not None:
            metrics.set_model(model.name, model.version)
            metrics.track_queue(lambda: self._batcher.queued)

    @classmethod
    def load(cls, settings: Settings, metrics: Metrics | None = None) -> ServingCore:
        """Load, validate and warm up ``settings.model_path``. Raises ModelLoadError."""
        model = cls._load_model(settings)
        return cls(settings, model, metrics)

    @staticmethod
    def _load_model(settings: Settings) -> OnnxModel:
        sizes = tuple(sorted({1, min(8, settings.max_batch_size), settings.max_batch_size}))
        return OnnxModel.load(
            settings.model_path, threads=settings.threads, spinning=settings.spinning,
            warmup_batch_sizes=sizes, overlap_threads=settings.overlap_threads,
        )

    # -- information --------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        return self._model.info

    @property
    def model(self) -> OnnxModel:
        return self._model

    @property
    def max_batch_size(self) -> int:
        return self._batcher.max_batch_size

    @property
    def ready(self) -> bool:
        return not self._draining

    @property
    def inflight(self) -> int:
        """classify() calls admitted and not yet answered (all APIs)."""
        return self._inflight

    async def drained(self, timeout: float) -> bool:
        """Wait (polling, for shutdown) until no admitted request is left; True if none."""
        end = time.monotonic() + timeout
        while self._inflight and time.monotonic() < end:
            await asyncio.sleep(0.005)
        return not self._inflight

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def batcher(self) -> Batcher:
        return self._batcher

    def check_model(self, name: str = "", version: str = "") -> ModelInfo:
        """The served model's info if ``name``/``version`` match it ('' matches any)."""
        info = self._model.info
        if name and name != info.name:
            raise UnknownModelError(
                f"unknown model {name!r}: this server serves {info.name!r}"
            )
        if version and version != info.version:
            raise UnknownModelError(
                f"unknown version {version!r} of model {info.name!r}: this server serves "
                f"version {info.version!r}"
            )
        return info

    def check_images(self, images: np.ndarray) -> np.ndarray:
        """``images`` as a contiguous uint8 [N, 32, 32, 3] array, 1 <= N <= the limit."""
        if not isinstance(images, np.ndarray):
            raise InvalidInputError(f"images must be a numpy array, got {type(images).__name__}")
        if images.dtype != np.uint8:
            raise InvalidInputError(f"images must be uint8, got {images.dtype}")
        if images.ndim != 4 or images.shape[1:] != _IMAGE_SHAPE:
            raise InvalidInputError(
                f"images must have shape [N, 32, 32, 3], got {list(images.shape)}"
            )
        n = images.shape[0]
        if n == 0:
            raise InvalidInputError("the request holds no images")
        if n > self.max_images_per_request:
            raise InvalidInputError(
                f"too many images in one request: {n} > {self.max_images_per_request}"
            )
        if not images.flags.c_contiguous:
            images = np.ascontiguousarray(images)
        return images

    # -- inference ----------------------------------------------------------------------

    async def classify(
        self,
        images: np.ndarray,
        *,
        deadline: float | None = None,
        model_name: str = "",
        model_version: str = "",
    ) -> Prediction:
        """Probabilities for uint8 [N, 32, 32, 3] images, computed in a dynamic batch.

        ``deadline`` is a ``time.monotonic()`` instant (see ``deadline_after``). The model
        name/version are checked when the request is admitted. Raises InvalidInputError,
        UnknownModelError, UnavailableError (shutting down), OverloadedError (queue full),
        DeadlineExceededError, or NonFiniteOutputError (a broken model; INTERNAL).
        """
        if self._draining:
            raise UnavailableError("server is shutting down")
        if model_name or model_version:
            self.check_model(model_name, model_version)
        images = self.check_images(images)
        self._inflight += 1
        try:
            probabilities, model = await self._batcher.submit(images, deadline)
        finally:
            self._inflight -= 1
        if self._count_images is not None:
            self._count_images(len(probabilities))
        return Prediction(probabilities, model.info)

    def _run(self, batch: np.ndarray):
        model = self._model  # one read: the whole batch runs on this model, even mid-swap
        return model.predict(batch), model

    # -- hot reload -----------------------------------------------------------------------

    def reload(self) -> bool:
        """Load the model file beside the current one and swap if it is valid.

        Blocking (run it off the event loop). Returns True if swapped; on a bad file logs
        the reason, keeps the current model and returns False.
        """
        with self._reload_lock:
            old = self._model
            try:
                new = self._load_model(self.settings)
            except ModelLoadError as exc:
                try:
                    self._rejected = FileSignature.of(os.stat(self.settings.model_path))
                except OSError:
                    self._rejected = None
                log.error("model reload rejected, still serving %s version %s: %s",
                          old.name, old.version, exc)
                if self.metrics:
                    self.metrics.reloads.labels("rejected").inc()
                return False
            self._model = new  # atomic swap; batches already running keep `old`
            self._rejected = None
            if new.name != old.name:
                log.warning("model name changed on reload: %s -> %s", old.name, new.name)
            log.info("model swapped: %s version %s -> %s version %s",
                     old.name, old.version, new.name, new.version)
            if self.metrics:
                self.metrics.reloads.labels("ok").inc()
                self.metrics.set_model(new.name, new.version)
            return True

    def _file_changed(self) -> bool:
        try:
            current = FileSignature.of(os.stat(self.settings.model_path))
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
                    log.info("model file %s changed; reloading", self.settings.model_path)
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
        if self.settings.reload_interval_s > 0 and self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(self.settings.reload_interval_s))

    def begin_shutdown(self) -> None:
        """From now on classify() raises UnavailableError; queued work still completes."""
        self._draining = True

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
