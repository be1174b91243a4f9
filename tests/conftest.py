"""Shared pytest fixtures: real models, real servers (no mocks).

Fixtures
--------
``tiny_model_path``
    Path to the tiny contract-honouring ONNX model (tests/tiny_model.py: name "tiny-cnn",
    version "1"), written fresh into the test's tmp_path. Needs ``onnx`` (dev extra).

``server_factory``
    ``server_factory(model_path=None, **settings_overrides) -> BackgroundServer``: starts the
    real server (cifar10_serving.service.Service: the data plane, the gRPC and HTTP doors,
    real onnxruntime) in-process on a background event-loop thread, on free ports (port 0,
    http_port 0: ``server.http_address``), metrics off unless ``metrics_port=0`` is passed.
    Stopped at the end of the test.
    ``model_path`` defaults to ``tiny_model_path``.

``server``
    ``server_factory()`` with the defaults: the tiny model, port 0. Useful attributes:
    ``server.address`` ("localhost:PORT"), ``server.port``, ``server.plane``
    (cifar10_serving.dataplane.plane.DataPlane), ``server.service``, ``server.settings``, ``server.metrics``,
    ``server.call(coro)`` (run a coroutine on the server's loop), ``server.stop(grace)``.

``channel``
    A ``grpc.insecure_channel`` to ``server``, closed afterwards.

A free TCP port for a test's own use: ``from tests.ports import free_port``.
"""

from __future__ import annotations

import os

import grpc
import pytest

# Servers the tests start as processes take a free HTTP port unless a test names one: the
# default (8501) may be taken by another test's server or a server the developer runs.
os.environ.setdefault("CIFAR10_HTTP_PORT", "0")


@pytest.fixture
def tiny_model_path(tmp_path):
    from tests.tiny_model import write_tiny_model

    return write_tiny_model(tmp_path / "tiny-cnn.onnx")


@pytest.fixture
def server_factory(tiny_model_path):
    from cifar10_serving.testing import BackgroundServer
    from cifar10_serving.settings import Settings

    started = []

    def make(model_path=None, **overrides):
        values = dict(
            model_path=str(model_path or tiny_model_path),
            host="127.0.0.1",
            port=0,
            http_port=0,
            metrics_port=-1,
            grace_seconds=5.0,
            reload_interval_s=0.0,
        )
        values.update(overrides)
        if values.get("model_repository"):  # a repository instead of the tiny model's file
            del values["model_path"]
        srv = BackgroundServer(Settings(**values))
        started.append(srv)
        return srv.start()

    yield make
    for srv in started:
        srv.stop(grace=0.0)


@pytest.fixture
def server(server_factory):
    return server_factory()


@pytest.fixture
def channel(server):
    ch = grpc.insecure_channel(server.address)
    yield ch
    ch.close()
