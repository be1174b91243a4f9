"""Settings -> a data plane with its metrics wired: the one place it is assembled.

``cifar10_serving.service`` (``cifar10-serve`` and ``BackgroundServer``) calls ``build_plane``;
the data plane itself takes explicit parameters and knows neither ``Settings`` nor
Prometheus. Imports no grpc: the model loads while grpc imports (``cifar10_serving.startup``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from cifar10_serving.dataplane.models import ModelSet
from cifar10_serving.dataplane.plane import Batching, DataPlane, Hooks, Limits
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


def build_plane(settings: Settings, metrics: Metrics | None = None,
                model: OnnxModel | None = None) -> DataPlane:
    """The data plane around ``model``, or around ``settings.model_path`` loaded now (sync;
    ModelLoadError). ``model``: loaded by ``model_loader(settings)``."""
    load = model_loader(settings)
    reports: dict = {}
    hooks = Hooks()
    if metrics is not None:
        def on_model(info: ModelInfo) -> None:
            metrics.set_model(info.name, info.version)

        def on_reload(swapped: bool) -> None:
            metrics.reloads.labels("ok" if swapped else "rejected").inc()

        reports = {"on_model": on_model, "on_reload": on_reload}
        hooks = Hooks(on_batch=metrics.observe_batch, on_images=metrics.images.inc)
    models = ModelSet(
        model if model is not None else load(settings.model_path), load_model=load,
        model_path=settings.model_path, reload_interval_s=settings.reload_interval_s, **reports,
    )
    plane = DataPlane(
        models,
        limits=Limits(
            max_images_per_request=settings.max_images_per_request,
            max_image_pixels=settings.max_image_pixels,
            max_request_pixels=settings.max_request_pixels,
            max_inflight_requests=settings.max_inflight_requests,
            max_inflight_bytes=settings.max_inflight_bytes,
        ),
        batching=Batching(
            max_batch_size=settings.max_batch_size,
            max_queue_delay_s=settings.max_queue_delay_ms / 1000.0,
            max_queue_size=settings.max_queue_size,
            instances=settings.instances,
        ),
        decode_threads=settings.decode_threads,
        hooks=hooks,
    )
    if metrics is not None:
        metrics.track_queue(lambda: plane.queued)
    return plane
