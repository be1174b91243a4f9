"""Health probes from their own process, so a busy client process does not delay them.

Two threads, each every ``--interval`` s until stdin closes: a gRPC ``grpc.health.v1`` Check
(a new channel kept open, like a load balancer's) and, with ``--http``, an HTTP GET of
``/v2/health/ready`` on the server's metrics port. Then one JSON line:
checks, failures and the slowest of each. ``Probes`` starts one and reads it back::

    python -m bench.probe --address 127.0.0.1:8500 [--http http://127.0.0.1:8502] < pipe
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import threading
import time
import urllib.request

from bench.paths import ROOT


class _Prober:
    def __init__(self, check, interval: float) -> None:
        self.check, self.interval = check, interval
        self.slowest = 0.0
        self.checks = 0
        self.failures: collections.Counter = collections.Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                self.check()
                self.slowest = max(self.slowest, time.perf_counter() - started)
                self.checks += 1
            except Exception as exc:  # noqa: BLE001 - a failed probe is a result
                self.failures[type(exc).__name__] += 1
            self.stop.wait(self.interval)

    def result(self) -> dict:
        return {"checks": self.checks, "slowest_ms": round(self.slowest * 1000, 1),
                "failures": dict(self.failures)}


def _grpc_check(address: str):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(address))
    return lambda: stub.Check(health_pb2.HealthCheckRequest(), timeout=10)


def _http_check(base: str):
    def check() -> None:
        with urllib.request.urlopen(base + "/v2/health/ready", timeout=10) as answer:
            answer.read()

    return check


class Probes:
    """``python -m bench.probe`` in its own process: ``start()``, then ``stop()`` -> results."""

    def __init__(self, address: str, http: str | None = None, interval: float = 0.01) -> None:
        command = [sys.executable, "-m", "bench.probe", "--address", address,
                   "--interval", str(interval)]
        if http:
            command += ["--http", http]
        self.process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)

    def stop(self) -> dict:
        out, _ = self.process.communicate("", timeout=60)
        return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", required=True, help="gRPC host:port")
    parser.add_argument("--http", help="metrics base URL, e.g. http://127.0.0.1:8502")
    parser.add_argument("--interval", type=float, default=0.01)
    args = parser.parse_args(argv)
    probers = {"grpc": _Prober(_grpc_check(args.address), args.interval)}
    if args.http:
        probers["http"] = _Prober(_http_check(args.http), args.interval)
    for prober in probers.values():
        prober.thread.start()
    sys.stdin.read()  # until the parent closes it
    for prober in probers.values():
        prober.stop.set()
    for prober in probers.values():
        prober.thread.join(15)
    print(json.dumps({name: prober.result() for name, prober in probers.items()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
