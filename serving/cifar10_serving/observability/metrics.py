"""Prometheus metrics for the server (the edge: the serving core knows none of them).

Metrics live in their own ``CollectorRegistry`` per ``Metrics`` object (so several servers in
one test process do not collide) and are served over HTTP by ``Metrics.serve``:

* ``cifar10_requests_total{door, method, code}``: finished requests by door (``grpc``,
  ``http``), method (the RPC's name; an HTTP route's name) and code (the gRPC status code's
  name; the HTTP status)
* ``cifar10_request_duration_seconds{door, method}``: latency histogram (server side, per
  request or per stream message)
* ``cifar10_images_total{model, version}``: images classified, all APIs together, by the
  model version that classified them
* ``cifar10_batch_size{model, version}``: histogram of images per model run (dynamic
  batching at work)
* ``cifar10_queue_depth_images``: images waiting for the models right now, every model
  version's queue together (the scaling signal: one number per server)
* ``cifar10_model_info{name, version}``: 1 for each model version served
* ``cifar10_model_reloads_total{result}``: hot reloads, ``ok`` or ``rejected``
* ``cifar10_malformed_requests_total{method}``: request messages that did not parse
  (answered INVALID_ARGUMENT; ``cifar10_serving.grpc_api.methods``)
* ``cifar10_ready``: 1 while the server is SERVING

The same port answers HTTP health probes (``cifar10_serving.observability.http_probes``:
``/v2/health/live``, ``/v2/health/ready``).

With several worker processes (``--workers``), ``enable_multiprocess(directory)`` is called
once before any ``Metrics`` exists and before the fork: every process then writes its metrics
to files in ``directory`` (prometheus_client's multiprocess mode) and the first process
serves them all, summed (counters, histograms, the queue depth) or one series per process
(``cifar10_model_info`` gains a ``pid`` label).
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client import multiprocess, values
from prometheus_client.exposition import ThreadingWSGIServer

from cifar10_serving.observability.http_probes import with_probes

if TYPE_CHECKING:  # annotations only: no onnxruntime import here
    from cifar10_serving.onnx_model import ModelInfo

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def enable_multiprocess(directory: str) -> None:
    """Every ``Metrics`` made from now on, in this process and the ones it forks, writes to
    files in ``directory`` (an empty directory that outlives the workers)."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    values.ValueClass = values.MultiProcessValue()


def _multiprocess() -> bool:
    return getattr(values.ValueClass, "_multiprocess", False)


def mark_process_dead(pid: int, _status: int = 0) -> None:
    """A worker has exited: drop its live gauges (its counters keep counting in the sum)."""
    if _multiprocess():
        multiprocess.mark_process_dead(pid)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.multiprocess = _multiprocess()
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "cifar10_requests", "Finished requests by door, method and status code.",
            ["door", "method", "code"], registry=r,
        )
        self.latency = Histogram(
            "cifar10_request_duration_seconds", "Server-side request latency.",
            ["door", "method"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.images = Counter("cifar10_images", "Images classified (all APIs).",
                              ["model", "version"], registry=r)
        self.batch_size = Histogram(
            "cifar10_batch_size", "Images per model run.", ["model", "version"],
            buckets=BATCH_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge(
            "cifar10_queue_depth_images", "Images waiting for the model.", registry=r,
            multiprocess_mode="livesum",
        )
        self.model_info = Gauge(
            "cifar10_model_info", "The model versions served (value 1 each).", ["name", "version"],
            registry=r, multiprocess_mode="liveall",
        )
        self._queue_depth: Callable[[], float] | None = None
        self.reloads = Counter(
            "cifar10_model_reloads", "Model hot reloads by result.", ["result"], registry=r
        )
        self.malformed = Counter(
            "cifar10_malformed_requests", "Request messages that did not parse, by method.",
            ["method"], registry=r,
        )
        self.ready_gauge = Gauge(
            "cifar10_ready", "1 while the server is SERVING.", registry=r,
            multiprocess_mode="livemax",
        )
        self.ready = False
        self._children: dict[tuple[str, str, str], Callable[[], None]] = {}
        self._latency_children: dict[tuple[str, str], Histogram] = {}
        self._images_children: dict[tuple[str, str], Callable[[float], None]] = {}
        self._batch_children: dict[tuple[str, str], Callable[[float], None]] = {}
        self._model_labels: set[tuple[str, str]] = set()
        self.http_server = None
        self.port: int | None = None

    def observe(self, door: str, method: str, code: str, seconds: float) -> None:
        """Record one finished request (cheap: children are cached)."""
        key = (door, method, code)
        inc = self._children.get(key)
        if inc is None:
            inc = self._children[key] = self.requests.labels(door, method, code).inc
        inc()
        hist = self._latency_children.get((door, method))
        if hist is None:
            hist = self._latency_children[door, method] = self.latency.labels(door, method)
        hist.observe(seconds)

    def observer(self, door: str) -> Callable[[str, str, float], None]:
        """``observe(method, code, seconds)`` for one door's requests."""
        return functools.partial(self.observe, door)

    def malformed_request(self, method: str) -> None:
        """Count one request message that did not parse."""
        self.malformed.labels(method).inc()

    def set_ready(self, ready: bool) -> None:
        """The server's health: SERVING (True) or not; ``/v2/health/ready`` answers it."""
        self.ready = ready
        self.ready_gauge.set(1 if ready else 0)

    def set_models(self, served: list[tuple[str, str]]) -> None:
        """The model versions served now, as (name, version): 1 each; those no longer
        served lose their series (0 with several workers: it lives on in the file)."""
        for labels in self._model_labels - set(served):
            if self.multiprocess:
                self.model_info.labels(*labels).set(0)
            else:
                try:
                    self.model_info.remove(*labels)
                except KeyError:
                    pass
        self._model_labels = set(served)
        for labels in served:
            self.model_info.labels(*labels).set(1)

    def track_queue(self, depth: Callable[[], float]) -> None:
        """Report ``depth()`` as the queue depth: read at each scrape, or with several
        workers (whose gauges live in files) after each model run (``observe_batch``)."""
        if self.multiprocess:
            self._queue_depth = depth
        else:
            self.queue_depth.set_function(depth)

    def count_images(self, model: ModelInfo, images: int) -> None:
        """``images`` answered by ``model`` (a version served)."""
        key = (model.name, model.version)
        inc = self._images_children.get(key)
        if inc is None:
            inc = self._images_children[key] = self.images.labels(*key).inc
        inc(images)

    def observe_batch(self, model: ModelInfo, images: int) -> None:
        """One model run of ``images`` images by ``model``."""
        key = (model.name, model.version)
        observe = self._batch_children.get(key)
        if observe is None:
            observe = self._batch_children[key] = self.batch_size.labels(*key).observe
        observe(images)
        if self._queue_depth is not None:
            self.queue_depth.set(self._queue_depth())

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP endpoint (port 0: a free one) on its own thread: ``/metrics`` and
        the health probes; return the bound port."""
        registry = self.registry
        if self.multiprocess:  # every worker's files, summed
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        app = with_probes(make_wsgi_app(registry), lambda: self.ready)
        server = make_server(host, port, app, _server_class(host, port),
                             handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
        self.http_server = server
        self.port = server.server_port
        return self.port

    def close(self) -> None:
        if self.http_server is not None:
            self.http_server.shutdown()
            self.http_server.server_close()
            self.http_server = None


def _server_class(host: str, port: int) -> type[ThreadingWSGIServer]:
    """prometheus_client's threaded WSGI server, in the address family of ``host``."""
    family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                flags=socket.AI_PASSIVE)[0][0]
    return type("MetricsServer", (ThreadingWSGIServer,), {"address_family": family})


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # no line per scrape or probe
        pass
