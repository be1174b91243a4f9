"""h2load as a lean load generator for our two APIs (the benchmark's part (e)).

h2load (Debian: ``apt-get install nghttp2-client``) is nghttp2's HTTP/2 benchmark client,
written in C: it sends one pre-framed gRPC request over and over and costs the CPUs it
shares with the server far less per call than a Python gRPC client does, so the server
gets more of them. Here it drives our server and
``bench.echo_server`` with the same requests as ``bench.loadgen`` (random raw 32x32x3 images):
``--api cifar10`` (the default) calls cifar10.v2.Classifier/Classify, ``--api oip`` the Open
Inference Protocol's inference.GRPCInferenceService/ModelInfer (``--model-name``: the model
the request names; '' asks for the served one).

Concurrency C is C streams in flight: ``-c min(C, 4)`` connections of ``-m C / connections``
streams each. Latency percentiles come from h2load's per-request log (``--log-file``).

h2load sees HTTP status codes only; a gRPC error travels in the trailers of an HTTP 200
answer. So ``run`` first sends the same request once through grpcio and requires an OK
answer, and callers also check the server's log; a server that failed requests only under
load would still be counted as answering them.

    python -m bench.h2load --address 127.0.0.1:8500 --batch 1 --concurrency 64 --duration 5
    python -m bench.h2load --address 127.0.0.1:8500 --api oip --model-name cifar10-cnn
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import tempfile

from bench.loadgen import CIFAR10_METHOD, OIP_METHOD, build_requests

APIS = ("cifar10", "oip")
PATHS = {"cifar10": CIFAR10_METHOD, "oip": OIP_METHOD}
FINISHED = re.compile(r"finished in ([\d.]+)m?s, ([\d.]+) req/s")
REQUESTS = re.compile(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, "
                      r"(\d+) failed, (\d+) errored, (\d+) timeout")


def binary() -> str | None:
    """The h2load executable (``H2LOAD`` overrides), or None when it is not installed."""
    return shutil.which(os.environ.get("H2LOAD", "h2load"))


def request_message(batch: int, api: str = "cifar10", model_name: str = "") -> bytes:
    """A serialized request of ``batch`` random raw images: a ClassifyRequest (``cifar10``) or
    a ModelInferRequest for ``model_name`` (``oip``); bench.loadgen's first request."""
    return build_requests(api, batch, model_name, variants=1)[0]


def grpc_frame(message: bytes) -> bytes:
    """gRPC's length-prefixed message: flag 0 (not compressed), 4-byte big-endian length."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def layout(concurrency: int) -> tuple[int, int]:
    """(connections, streams per connection) for ``concurrency`` streams in flight."""
    connections = min(concurrency, 4)
    if concurrency % connections:
        raise ValueError(f"concurrency {concurrency} is not a multiple of {connections} connections")
    return connections, concurrency // connections


GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")


def command(url: str, body: str, headers: tuple[str, ...], concurrency: int, duration: float,
            warmup: float, requests: int, log_file: str, http1: bool = False) -> list[str]:
    """The h2load command line: ``concurrency`` requests in flight, each ``body`` (a file)
    POSTed to ``url`` with ``headers``. HTTP/2 (gRPC): streams over at most 4 connections;
    ``http1``: one connection per request in flight, as HTTP/1.1 clients do."""
    connections, streams = (concurrency, 1) if http1 else layout(concurrency)
    cmd = [binary() or "h2load", "-c", str(connections), "-m", str(streams), "-d", body,
           *(arg for header in headers for arg in ("-H", header)), f"--log-file={log_file}"]
    if http1:
        cmd.append("--h1")
    if requests:
        cmd += ["-n", str(max(requests, concurrency))]
    else:
        cmd += ["-D", f"{duration:g}", f"--warm-up-time={warmup:g}"]
    return [*cmd, url]


def check_request(address: str, message: bytes, api: str = "cifar10", timeout: float = 30.0) -> None:
    """Send ``message`` once through grpcio to ``api``'s method; raises unless the server
    answers it OK."""
    import grpc

    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(PATHS[api])  # bytes in, bytes out
        call(message, timeout=timeout, wait_for_ready=True)


def parse(stdout: str, log_file: str, batch: int) -> dict:
    finished, counts = FINISHED.search(stdout), REQUESTS.search(stdout)
    if not finished or not counts:
        return {"error": f"cannot read h2load's summary: {stdout[-1000:]}"}
    total, done, succeeded, failed, errored, timeouts = map(int, counts.groups())
    with open(log_file) as f:
        micros = sorted(int(line.split()[2]) for line in f if line.strip())
    out = {
        "requests": succeeded, "requests_per_s": float(finished.group(2)),
        "images_per_s": round(float(finished.group(2)) * batch, 1),
        "errors": {name: n for name, n in (("failed", failed), ("errored", errored),
                                           ("timeout", timeouts), ("not done", total - done)) if n},
    }
    if len(micros) >= 2:
        cuts = statistics.quantiles(micros, n=100, method="inclusive")
        out.update(p50_ms=round(cuts[49] / 1000, 3), p90_ms=round(cuts[89] / 1000, 3),
                   p99_ms=round(cuts[98] / 1000, 3), mean_ms=round(statistics.fmean(micros) / 1000, 3))
    return out


def run(address: str, batch: int, concurrency: int, duration: float = 5.0, warmup: float = 1.0,
        requests: int = 0, timeout: float = 300.0, api: str = "cifar10",
        model_name: str = "") -> dict:
    """One h2load measurement of ``api``: images/s and latency percentiles (ms), or
    ``{"error": ...}``."""
    if binary() is None:
        return {"error": "h2load not found: apt-get install nghttp2-client"}
    import grpc

    message = request_message(batch, api, model_name)
    try:
        check_request(address, message, api)
    except grpc.RpcError as exc:
        return {"error": f"the server did not answer the request OK: {exc.code().name}: {exc.details()}"}
    out = measure(f"http://{address}{PATHS[api]}", grpc_frame(message), GRPC_HEADERS, batch,
                  concurrency, duration, warmup, requests, timeout)
    out.update(api=api, batch=batch, concurrency=concurrency)
    return out


def measure(url: str, body: bytes, headers: tuple[str, ...], batch: int, concurrency: int,
            duration: float = 5.0, warmup: float = 1.0, requests: int = 0,
            timeout: float = 300.0, http1: bool = False) -> dict:
    """One h2load run POSTing ``body`` to ``url``: images/s (``batch`` per request) and
    latency percentiles (ms), or ``{"error": ...}``."""
    if binary() is None:
        return {"error": "h2load not found: apt-get install nghttp2-client"}
    with tempfile.TemporaryDirectory() as tmp:
        body_file, log_file = os.path.join(tmp, "request.bin"), os.path.join(tmp, "requests.tsv")
        with open(body_file, "wb") as f:
            f.write(body)
        cmd = command(url, body_file, headers, concurrency, duration, warmup, requests, log_file,
                      http1)
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"h2load timed out after {timeout:.0f} s"}
        if done.returncode != 0:
            return {"error": f"h2load exited with {done.returncode}: {done.stderr.strip()[-1000:]}"}
        return parse(done.stdout, log_file, batch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--api", choices=APIS, default="cifar10")
    parser.add_argument("--model-name", default="", help="the model --api oip asks for ('' = served one)")
    parser.add_argument("--batch", type=int, default=1, help="images per request")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--requests", type=int, default=0,
                        help="send exactly this many requests instead (smoke tests)")
    args = parser.parse_args(argv)
    result = run(args.address, args.batch, args.concurrency, args.duration, args.warmup,
                 args.requests, api=args.api, model_name=args.model_name)
    print(json.dumps(result))
    return 1 if "error" in result else 0


if __name__ == "__main__":
    raise SystemExit(main())
