"""cifar10_serving.healthcheck (the container HEALTHCHECK) exits 0 only when the server is SERVING."""

from __future__ import annotations

import subprocess
import sys
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.ports import free_port
from cifar10_serving import healthcheck


def start_health_server(credentials: grpc.ServerCredentials | None = None):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, servicer, f"127.0.0.1:{port}"


@pytest.fixture
def health_server():
    server, servicer, address = start_health_server()
    yield servicer, address
    server.stop(0)


def test_exit_status_follows_the_health_status(health_server, capsys):
    servicer, address = health_server
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert healthcheck.main(["--address", address], {}) == 1
    assert "NOT_SERVING" in capsys.readouterr().err
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert healthcheck.main(["--address", address], {}) == 0
    assert healthcheck.main(["--address", address, "--service", "no.such.Service"], {}) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_no_server_is_unhealthy(capsys):
    assert healthcheck.main(["--address", f"127.0.0.1:{free_port()}", "--timeout", "0.5"], {}) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_the_container_command_reads_the_port_from_the_environment(health_server):
    servicer, address = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    env = {"CIFAR10_PORT": address.rsplit(":", 1)[1], "PATH": ""}
    result = subprocess.run(
        [sys.executable, "-m", "cifar10_serving.healthcheck"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mtls"])
def test_tls_follows_the_server_settings_in_the_environment(tmp_path, mutual, capsys):
    from tests.client.helpers import make_certs

    certs = make_certs(tmp_path / "certs")
    read = lambda name: certs[name].read_bytes()
    credentials = grpc.ssl_server_credentials(
        [(read("server.key"), read("server.pem"))],
        root_certificates=read("ca.pem") if mutual else None, require_client_auth=mutual,
    )
    server, servicer, address = start_health_server(credentials)
    try:
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        env = {"CIFAR10_PORT": address.rsplit(":", 1)[1], "CIFAR10_TLS_CERT": str(certs["server.pem"]),
               "CIFAR10_TLS_KEY": str(certs["server.key"])}
        if mutual:
            env["CIFAR10_TLS_CLIENT_CA"] = str(certs["ca.pem"])
        # By default the server's own certificate is the trust anchor; a CA works too.
        assert healthcheck.main(["--timeout", "2"], env) == (1 if mutual else 0)
        env["CIFAR10_HEALTHCHECK_CA"] = str(certs["ca.pem"])
        if mutual:
            assert healthcheck.main(["--timeout", "2"], env) == 1, "no client certificate"
            env["CIFAR10_HEALTHCHECK_CLIENT_CERT"] = str(certs["client.pem"])
            env["CIFAR10_HEALTHCHECK_CLIENT_KEY"] = str(certs["client.key"])
        assert healthcheck.main(["--timeout", "2"], env) == 0, capsys.readouterr().err
        assert healthcheck.main(["--timeout", "2", "--address", address.replace("127.0.0.1", "localhost")], env) == 0
    finally:
        server.stop(0)
