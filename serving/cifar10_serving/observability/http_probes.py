"""Health over HTTP on the metrics port, answered by the metrics server's own thread.

gRPC health checks share the event loop and grpc's queue of calls with everything else:
under a flood of 4,000 calls at once the slowest took 1.7 to 3 s. A probe here waits for no
call, only for a moment of the GIL. The paths are the Open Inference Protocol's HTTP ones
(Triton, KServe): ``GET /v2/health/live`` is 200 while the process runs; ``GET
/v2/health/ready`` is 200 while the server is SERVING (its gRPC health), else 503. Every other
path is Prometheus's (``/metrics``). With several workers only the first process serves this
port, so readiness is that process's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

LIVE = "/v2/health/live"
READY = "/v2/health/ready"

WsgiApp = Callable[[dict, Callable[..., Any]], Iterable[bytes]]


def with_probes(metrics_app: WsgiApp, ready: Callable[[], bool]) -> WsgiApp:
    """``metrics_app`` with the two health paths in front of it."""

    def app(environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == LIVE:
            return _answer(start_response, True, b"live\n")
        if path == READY:
            ok = ready()
            return _answer(start_response, ok, b"ready\n" if ok else b"not ready\n")
        return metrics_app(environ, start_response)

    return app


def _answer(start_response: Callable[..., Any], ok: bool, body: bytes) -> list[bytes]:
    start_response("200 OK" if ok else "503 Service Unavailable",
                   [("Content-Type", "text/plain; charset=utf-8"),
                    ("Content-Length", str(len(body)))])
    return [body]
