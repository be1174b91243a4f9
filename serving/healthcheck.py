"""Container health check: exit 0 only when the server's gRPC health service says SERVING.

Used by serving/Dockerfile's HEALTHCHECK and docker-compose.yml (``python -m
serving.healthcheck``). It asks ``127.0.0.1:$CIFAR10_PORT`` (default 8500) about the
overall server status (service ""), unless told otherwise; any other answer, an error or
no answer within the timeout exits 1 with one line on stderr saying why.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_PORT = 8500


def check(address: str, service: str = "", timeout: float = 3.0) -> str:
    """Return the health status name (e.g. ``"SERVING"``); raise grpc.RpcError on failure."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def main(argv: list[str] | None = None) -> int:
    port = os.environ.get("CIFAR10_PORT", str(DEFAULT_PORT))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--address", default=f"127.0.0.1:{port}", help="host:port (default: 127.0.0.1:$CIFAR10_PORT)"
    )
    parser.add_argument("--service", default="", help='service name to ask about (default: "", the server)')
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    args = parser.parse_args(argv)
    try:
        status = check(args.address, args.service, args.timeout)
    except grpc.RpcError as error:
        print(f"unhealthy: {args.address}: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    if status != "SERVING":
        print(f"unhealthy: {args.address} reports {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
