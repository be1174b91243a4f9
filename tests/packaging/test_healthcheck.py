"""serving.healthcheck (the container HEALTHCHECK) exits 0 only when the server is SERVING."""

from __future__ import annotations

import subprocess
import sys
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from serving import healthcheck
from tests.packaging.compose import free_port


@pytest.fixture
def health_server():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(0)


def test_exit_status_follows_the_health_status(health_server, capsys):
    servicer, address = health_server
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert healthcheck.main(["--address", address]) == 1
    assert "NOT_SERVING" in capsys.readouterr().err
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert healthcheck.main(["--address", address]) == 0
    assert healthcheck.main(["--address", address, "--service", "no.such.Service"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_no_server_is_unhealthy(capsys):
    assert healthcheck.main(["--address", f"127.0.0.1:{free_port()}", "--timeout", "0.5"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_the_container_command_reads_the_port_from_the_environment(health_server):
    servicer, address = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    env = {"CIFAR10_PORT": address.rsplit(":", 1)[1], "PATH": ""}
    result = subprocess.run(
        [sys.executable, "-m", "serving.healthcheck"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
