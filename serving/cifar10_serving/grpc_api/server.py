"""The gRPC door: every service on one port, health, reflection, TLS.

``ServingServer`` registers our two APIs (cifar10.v2 and the Open Inference Protocol),
gRPC health and reflection on one grpc.aio server, every method the same way
(``cifar10_serving.grpc_api.methods``), and gives the lifecycle its ``Door``: health turns
NOT_SERVING when shutdown begins, and the port closes when the lifecycle says so.
``cifar10_serving.startup`` runs it as ``cifar10-serve``.
"""

from __future__ import annotations

import errno
import logging
import socket

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

from cifar10_protos.cifar10.v2 import classifier_pb2
from cifar10_protos.inference import grpc_service_pb2
from cifar10_serving.dataplane.plane import DataPlane
from cifar10_serving.grpc_api.classifier import ClassifierServicer
from cifar10_serving.grpc_api.inference import InferenceServicer
from cifar10_serving.grpc_api.methods import Methods
from cifar10_serving.grpc_api.receive_gate import Gates
from cifar10_serving.grpc_api.status import RequestObserver
from cifar10_serving.inference_protocol.statistics import InferenceStatistics
from cifar10_serving.lifecycle import Door, Lifecycle
from cifar10_serving.observability.requests import Requests
from cifar10_serving.settings import Settings

log = logging.getLogger("cifar10_serving.server")

PENDING_CALLS = 1 << 16
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
CLASSIFIER = classifier_pb2.DESCRIPTOR.services_by_name["Classifier"].full_name
INFERENCE = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def server_credentials(settings: Settings) -> grpc.ServerCredentials:
    key, cert = _read(settings.tls_key), _read(settings.tls_cert)
    client_ca = _read(settings.tls_client_ca) if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def grpc_options(settings: Settings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # A port in use is an error, not a silent second listener; several workers share
        # theirs (the first one reserved it: cifar10_serving.process.workers).
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        # Calls a connection may have open at once; a grpc client's calls past it fail
        # UNAVAILABLE (they are not queued), so the default is well above any client's.
        ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
        # Calls received and not yet taken by our event loop: past grpc's defaults (1,000,
        # then random drops to 3,000) they are CANCELLED before our code sees them. Ours
        # (every connection's streams) answer them all: OK or RESOURCE_EXHAUSTED.
        ("grpc.server.max_pending_requests", PENDING_CALLS),
        ("grpc.server.max_pending_requests_hard_limit", PENDING_CALLS),
        # A call that waits for its turn to read (cifar10_serving.grpc_api.receive_gate) holds only its
        # stream's initial window (64 KiB), not one grown to the link's bandwidth.
        ("grpc.http2.bdp_probe", 0),
        *connection_age_options(settings),
    ]


def connection_age_options(settings: Settings) -> list[tuple[str, int]]:
    """A connection older than max_connection_age_s (gRPC adds +-10 % jitter) gets a GOAWAY:
    its client sends new calls on a new connection and re-resolves the target's name, so
    replicas added behind that name get calls (round_robin only knows the addresses it
    resolved, and gRPC re-resolves when a connection closes, not on a timer). The calls in
    flight on the old connection have max_connection_age_grace_s to finish; calls the
    GOAWAY catches before the server saw them are retried by gRPC transparently. None when
    max_connection_age_s is 0 (gRPC's default: no age)."""
    if not settings.max_connection_age_s:
        return []
    return [
        ("grpc.max_connection_age_ms", max(1, round(settings.max_connection_age_s * 1000))),
        ("grpc.max_connection_age_grace_ms", round(settings.max_connection_age_grace_s * 1000)),
    ]


def _check_free(host: str, port: int) -> None:
    """OSError naming the port and how to change it if it is taken: grpc's own bind failure
    is a line of C-core log and "Failed to bind", without either."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc binds
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return  # anything else: grpc's bind reports it
            raise OSError(f"cannot listen on {host}:{port}: port in use (another server? "
                          f"{Settings.how_to_set('port')} changes the port)") from None


class ServingServer:
    """A grpc.aio server with our servicers, health and reflection, bound to the settings'
    host and port (``port``: the one bound). Make one on the event loop."""

    def __init__(self, settings: Settings, plane: DataPlane, lifecycle: Lifecycle,
                 observe: RequestObserver | None = None,
                 on_malformed=None, statistics: InferenceStatistics | None = None,
                 requests: Requests | None = None) -> None:
        self.settings = settings
        self.plane = plane
        self.grpc_server = grpc.aio.server(options=grpc_options(settings))
        methods = Methods(Gates(image_slots=settings.receive_slots), lifecycle, observe, on_malformed,
                          requests)
        self.gates = methods.gates
        methods.add(self.grpc_server, CLASSIFIER, ClassifierServicer(plane, lifecycle, observe).methods())
        methods.add(self.grpc_server, INFERENCE,
                    InferenceServicer(plane, lifecycle, observe, statistics,
                                      settings.repository_api).methods())
        self.service_names = [CLASSIFIER, INFERENCE]
        self.health = HealthServicer()
        adopted = methods.adopt(self.grpc_server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, adopted)
        # reflection.enable_server_reflection, but through adopt (which it would not
        # recognise as an aio server)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            ReflectionServicer(
                [*self.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                 reflection.SERVICE_NAME]),
            adopted,
        )
        address = f"{settings.host}:{settings.port}"
        if ":" in settings.host and not settings.host.startswith("["):
            address = f"[{settings.host}]:{settings.port}"
        if settings.port and settings.workers <= 1:
            _check_free(settings.host, settings.port)
        if settings.tls:
            self.port = self.grpc_server.add_secure_port(address, server_credentials(settings))
        else:
            self.port = self.grpc_server.add_insecure_port(address)
        if not self.port:
            raise RuntimeError(f"cannot bind {address}")
        lifecycle.doors.append(Door(self._not_serving, self.grpc_server.stop))

    async def _set_health(self, status) -> None:
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    async def _not_serving(self) -> None:
        await self.health.enter_graceful_shutdown()

    async def start(self) -> None:
        """Open the port; health turns SERVING (the model is already loaded and warm)."""
        await self._set_health(NOT_SERVING)
        await self.grpc_server.start()
        if self.plane.ready:
            await self._set_health(SERVING)
