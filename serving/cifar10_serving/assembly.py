"""Settings -> a serving core with its metrics wired: the one place the server is assembled.

``cifar10-serve`` (``cifar10_serving.grpc_api.server``) and ``BackgroundServer`` both call
``build_core``; the core itself takes explicit parameters and knows neither ``Settings`` nor
Prometheus.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from cifar10_serving.dataplane.plane import CoreHooks, ServingCore
from cifar10_serving.onnx_model import ModelInfo, OnnxModel
from cifar10_serving.settings import Settings

if TYPE_CHECKING:  # not imported here: the model loads while Prometheus imports (startup.py)
    from cifar10_serving.observability.metrics import Metrics


def model_loader(settings: Settings) -> Callable[[str], OnnxModel]:
    """``load(path)``: a model loaded, checked and warmed up as ``settings`` say."""
    sizes = tuple(sorted({1, min(8, settings.max_batch_size), settings.max_batch_size}))
    return functools.partial(
        OnnxModel.load, threads=settings.threads, spinning=settings.spinning,
        warmup_batch_sizes=sizes, overlap_threads=settings.overlap_threads,
    )


def metrics_hooks(metrics: Metrics) -> CoreHooks:
    """The core's reports as Prometheus metrics."""

    def on_model(info: ModelInfo) -> None:
        metrics.set_model(info.name, info.version)

    def on_reload(swapped: bool) -> None:
        metrics.reloads.labels("ok" if swapped else "rejected").inc()

    return CoreHooks(on_batch=metrics.observe_batch, on_images=metrics.images.inc,
                     on_model=on_model, on_reload=on_reload)


def build_core(settings: Settings, metrics: Metrics | None = None,
               model: OnnxModel | None = None) -> ServingCore:
    """Build the core around ``model``, or around ``settings.model_path`` loaded now (sync;
    ModelLoadError). ``model``: loaded by ``model_loader(settings)``."""
    load = model_loader(settings)
    core = ServingCore(
        model if model is not None else load(settings.model_path),
        load_model=load,
        model_path=settings.model_path,
        max_batch_size=settings.max_batch_size,
        max_queue_delay_s=settings.max_queue_delay_ms / 1000.0,
        max_queue_size=settings.max_queue_size,
        instances=settings.instances,
        max_images_per_request=settings.max_images_per_request,
        max_image_pixels=settings.max_image_pixels,
        max_request_pixels=settings.max_request_pixels,
        max_inflight_requests=settings.max_inflight_requests,
        max_inflight_bytes=settings.max_inflight_bytes,
        decode_threads=settings.decode_threads,
        reload_interval_s=settings.reload_interval_s,
        hooks=metrics_hooks(metrics) if metrics is not None else None,
    )
    if metrics is not None:
        metrics.track_queue(lambda: core.queued)
    return core
