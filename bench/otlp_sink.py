"""An OTLP/gRPC trace receiver that keeps nothing: where a server under a benchmark exports
its spans (``OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:PORT``), so that tracing's cost
is measured with a real export and no collector's work on the same CPUs.

It answers every ``opentelemetry.proto.collector.trace.v1.TraceService/Export`` with an
empty success without parsing it, and prints the exports and bytes it got when stopped
(SIGTERM or SIGINT)::

    python -m bench.otlp_sink --port 4317     # prints "listening on PORT" when ready
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from concurrent import futures

import grpc

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class Sink(grpc.GenericRpcHandler):
    """Every export answered at once (an empty ExportTraceServiceResponse), counted."""

    def __init__(self) -> None:
        self.exports = 0
        self.bytes = 0
        self._lock = threading.Lock()

    def _export(self, request: bytes, _context) -> bytes:
        with self._lock:
            self.exports += 1
            self.bytes += len(request)
        return b""  # an ExportTraceServiceResponse with no field set

    def service(self, handler_call_details):
        if handler_call_details.method != METHOD:
            return None
        return grpc.unary_unary_rpc_method_handler(self._export)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.otlp_sink", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    args = parser.parse_args(argv)
    sink = Sink()
    server = grpc.server(futures.ThreadPoolExecutor(2), handlers=[sink])
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(f"listening on {port}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(0)
    print(f"exports {sink.exports} bytes {sink.bytes}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
