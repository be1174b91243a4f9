"""Container health check: exit 0 only when the server's gRPC health service says SERVING.

Used by serving/Dockerfile's HEALTHCHECK and docker-compose.yml (``python -m
cifar10_serving.healthcheck``). It asks ``127.0.0.1:$CIFAR10_PORT`` (default 8500) about the
overall server status (service ""), unless told otherwise; any other answer, an error or
no answer within the timeout exits 1 with one line on stderr saying why.

TLS follows the server's own settings in the same environment: when ``CIFAR10_TLS_CERT``
is set the check connects with TLS, trusting ``CIFAR10_HEALTHCHECK_CA`` (default: the
server certificate itself, which gRPC accepts as the trust anchor) and, where the server demands client
certificates (``CIFAR10_TLS_CLIENT_CA``), presenting ``CIFAR10_HEALTHCHECK_CLIENT_CERT`` and
``CIFAR10_HEALTHCHECK_CLIENT_KEY``. ``CIFAR10_HEALTHCHECK_SERVER_NAME`` overrides the name
checked against the certificate.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_PORT = 8500


def check(address: str, service: str = "", timeout: float = 3.0,
          credentials: grpc.ChannelCredentials | None = None, server_name: str | None = None) -> str:
    """Return the health status name (e.g. ``"SERVING"``); raise grpc.RpcError on failure."""
    if credentials is None:
        channel = grpc.insecure_channel(address)
    else:
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        channel = grpc.secure_channel(address, credentials, options)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    port = env.get("CIFAR10_PORT", str(DEFAULT_PORT))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=f"127.0.0.1:{port}",
                        help="host:port (default: 127.0.0.1:$CIFAR10_PORT)")
    parser.add_argument("--service", default="", help='service name to ask about (default: "", the server)')
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    parser.add_argument("--tls", action="store_true", default=bool(env.get("CIFAR10_TLS_CERT")),
                        help="connect with TLS (default: when $CIFAR10_TLS_CERT is set)")
    parser.add_argument("--ca", default=env.get("CIFAR10_HEALTHCHECK_CA") or env.get("CIFAR10_TLS_CERT"),
                        help="PEM to trust (default: $CIFAR10_HEALTHCHECK_CA, else $CIFAR10_TLS_CERT)")
    parser.add_argument("--cert", default=env.get("CIFAR10_HEALTHCHECK_CLIENT_CERT"),
                        help="client certificate for mutual TLS")
    parser.add_argument("--key", default=env.get("CIFAR10_HEALTHCHECK_CLIENT_KEY"),
                        help="client key for mutual TLS")
    parser.add_argument("--server-name", default=env.get("CIFAR10_HEALTHCHECK_SERVER_NAME"),
                        help="name to check the server certificate against")
    args = parser.parse_args(argv)
    try:
        credentials = None
        if args.tls:
            credentials = grpc.ssl_channel_credentials(_read(args.ca), _read(args.key), _read(args.cert))
        status = check(args.address, args.service, args.timeout, credentials, args.server_name)
    except OSError as error:
        print(f"unhealthy: cannot read TLS material: {error}", file=sys.stderr)
        return 1
    except grpc.RpcError as error:
        print(f"unhealthy: {args.address}: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    if status != "SERVING":
        print(f"unhealthy: {args.address} reports {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
