"""Settings -> a data plane with its metrics wired: the one place it is assembled.

``cifar10_serving.service`` (``cifar10-serve`` and ``BackgroundServer``) calls ``build_plane``;
the data plane itself takes explicit parameters and knows neither ``Settings`` nor
Prometheus. Imports no grpc: the model loads while grpc imports (``cifar10_serving.startup``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from cifar10_core.errors import ModelLoadError
from cifar10_serving.dataplane.models import Loaded, LoadModel, ModelSet, load_all
from cifar10_serving.dataplane.plane import Batching, DataPlane, Hooks, Limits
from cifar10_serving.dataplane.repository import Repository, SingleFile, Slot, source_of
from cifar10_serving.onnx_model import ModelInfo, OnnxModel
from cifar10_serving.settings import DEFAULT_REPOSITORY, Settings

if TYPE_CHECKING:  # not imported here: the model loads while Prometheus imports (startup.py)
    from cifar10_serving.observability.metrics import Metrics

log = logging.getLogger(__name__)


def server_batching(settings: Settings) -> Batching:
    """The batching of every model whose config.json does not say otherwise."""
    return Batching(max_batch_size=settings.max_batch_size,
                    max_queue_delay_s=settings.max_queue_delay_ms / 1000.0,
                    max_queue_size=settings.max_queue_size, instances=settings.instances)


def model_loader(settings: Settings) -> LoadModel:
    """``load(slot)``: a model file loaded, checked and warmed up for the batches its model
    will run (ModelLoadError, also for a config.json batch size the queue cannot hold)."""
    server = server_batching(settings)

    def load(slot: Slot) -> OnnxModel:
        batching = server.overridden(slot.batching)
        if batching.max_batch_size > server.max_queue_size:
            raise ModelLoadError(f"{slot.name}'s config.json: max_batch_size "
                                 f"{batching.max_batch_size} is more than the server's "
                                 f"max_queue_size {server.max_queue_size}")
        if slot.batching.instances and slot.batching.instances > server.instances:
            log.warning("%s's config.json asks for %d instances; the server runs %d at once "
                        "(--instances), so %d", slot.name, slot.batching.instances,
                        server.instances, server.instances)
        largest = batching.max_batch_size
        return OnnxModel.load(slot.path, threads=settings.threads, spinning=settings.spinning,
                              warmup_batch_sizes=tuple(sorted({1, min(8, largest), largest})),
                              overlap_threads=settings.overlap_threads,
                              name=slot.name, version=slot.version)

    return load


def load_models(settings: Settings) -> Loaded:
    """The models ``settings`` name, loaded now (sync; ModelLoadError)."""
    return load_all(_source(settings), model_loader(settings))


def _source(settings: Settings) -> SingleFile | Repository:
    return source_of(settings.model_repository, settings.model_path, DEFAULT_REPOSITORY)


def build_plane(settings: Settings, metrics: Metrics | None = None,
                loaded: Loaded | None = None) -> DataPlane:
    """The data plane around ``loaded`` (by ``load_models(settings)``), or around the models
    of ``settings`` loaded now (sync; ModelLoadError)."""
    load = model_loader(settings)
    source = _source(settings)
    reports: dict = {}
    hooks = Hooks()
    if metrics is not None:
        def on_models(infos: list[ModelInfo]) -> None:
            metrics.set_models([(info.name, info.version) for info in infos])

        def on_reload(swapped: bool) -> None:
            metrics.reloads.labels("ok" if swapped else "rejected").inc()

        reports = {"on_models": on_models, "on_reload": on_reload}
        hooks = Hooks(on_batch=metrics.observe_batch, on_images=metrics.count_images)
    models = ModelSet(
        source, loaded if loaded is not None else load_all(source, load), load_model=load,
        default_model=settings.default_model,
        reload_interval_s=0.0 if settings.repository_api else settings.reload_interval_s,
        **reports,
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
        batching=server_batching(settings),
        decode_threads=settings.decode_threads,
        hooks=hooks,
    )
    if metrics is not None:
        metrics.track_queue(lambda: plane.queued)
    return plane
