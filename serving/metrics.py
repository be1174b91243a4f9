"""Prometheus metrics for the server (the edge: the serving core knows none of them).

Metrics live in their own ``CollectorRegistry`` per ``Metrics`` object (so several servers in
one test process do not collide) and are served over HTTP by ``Metrics.serve``:

* ``cifar10_requests_total{method, code}``: finished RPCs by method and gRPC status code name
* ``cifar10_request_duration_seconds{method}``: latency histogram (server side, per RPC or
  per stream message)
* ``cifar10_images_total``: images classified, all APIs together
* ``cifar10_batch_size``: histogram of images per model run (dynamic batching at work)
* ``cifar10_queue_depth_images``: images waiting for the model right now
* ``cifar10_model_info{name, version}``: 1 for the model being served
* ``cifar10_model_reloads_total{result}``: hot reloads, ``ok`` or ``rejected``
* ``cifar10_malformed_requests_total{method}``: request messages that did not parse
  (answered INVALID_ARGUMENT; ``cifar10_serving.parsing``)
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "cifar10_requests", "Finished RPCs by method and gRPC status code.",
            ["method", "code"], registry=r,
        )
        self.latency = Histogram(
            "cifar10_request_duration_seconds", "Server-side request latency.",
            ["method"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.images = Counter("cifar10_images", "Images classified (all APIs).", registry=r)
        self.batch_size = Histogram(
            "cifar10_batch_size", "Images per model run.", buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge(
            "cifar10_queue_depth_images", "Images waiting for the model.", registry=r
        )
        self.model_info = Gauge(
            "cifar10_model_info", "The model being served (value 1).", ["name", "version"],
            registry=r,
        )
        self.reloads = Counter(
            "cifar10_model_reloads", "Model hot reloads by result.", ["result"], registry=r
        )
        self.malformed = Counter(
            "cifar10_malformed_requests", "Request messages that did not parse, by method.",
            ["method"], registry=r,
        )
        self._children: dict[tuple[str, str], Callable[[], None]] = {}
        self._latency_children: dict[str, Histogram] = {}
        self._model_labels: tuple[str, str] | None = None
        self.http_server = None
        self.port: int | None = None

    def observe(self, method: str, code: str, seconds: float) -> None:
        """Record one finished request (cheap: children are cached)."""
        key = (method, code)
        inc = self._children.get(key)
        if inc is None:
            inc = self._children[key] = self.requests.labels(method, code).inc
        inc()
        hist = self._latency_children.get(method)
        if hist is None:
            hist = self._latency_children[method] = self.latency.labels(method)
        hist.observe(seconds)

    def malformed_request(self, method: str) -> None:
        """Count one request message that did not parse."""
        self.malformed.labels(method).inc()

    def set_model(self, name: str, version: str) -> None:
        if self._model_labels is not None:
            try:
                self.model_info.remove(*self._model_labels)
            except KeyError:
                pass
        self._model_labels = (name, version)
        self.model_info.labels(name, version).set(1)

    def track_queue(self, depth: Callable[[], float]) -> None:
        self.queue_depth.set_function(depth)

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP endpoint (port 0: a free one); return the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self.http_server = server
        self.port = server.server_port
        return self.port

    def close(self) -> None:
        if self.http_server is not None:
            self.http_server.shutdown()
            self.http_server.server_close()
            self.http_server = None
