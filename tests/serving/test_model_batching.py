"""Batching and instances per model (config.json): each model version's runs are merged and
split by its own largest batch and take at most its own instances, reported per model by
GetModelInfo, ListModels and the Open Inference Protocol's model configuration; a change to
them while serving reloads the model; a batch size the queue cannot hold is refused. Real
servers on free ports, tiny models; the batcher's rules alone are in test_batching.py."""

from __future__ import annotations

import logging

import grpc
import httpx
import numpy as np
import pytest

from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
from cifar10_protos.cifar10.v2 import classifier_pb2_grpc as pb_grpc
from cifar10_serving.dataplane.plane import Batching
from cifar10_serving.dataplane.repository import BatchingConfig, ModelConfig, RepositoryError
from tests.serving.test_model_repository import add_version, configure
from tests.serving.test_repository_changes import wait_until


def classify(stub, count: int, model: str) -> pb.ClassifyResponse:
    pixels = np.random.default_rng(count).integers(0, 256, (count, 32, 32, 3), np.uint8)
    return stub.Classify(pb.ClassifyRequest(
        images=[pb.Image(raw=pb.RawImage(data=image.tobytes(), height=32, width=32, channels=3))
                for image in pixels], model_name=model), timeout=30)


def runs(srv, name: str, version: str) -> tuple[float, float]:
    """(model runs, images run) of one model version, from its batch size histogram."""
    child = srv.metrics.batch_size.labels(name, version)
    return sum(bucket.get() for bucket in child._buckets), child._sum.get()


def test_config_json_reads_batching_and_the_server_fills_in_the_rest(tmp_path):
    configure(tmp_path, "a", max_batch_size=4, instances=1)
    assert ModelConfig.read(tmp_path / "a").batching == BatchingConfig(max_batch_size=4, instances=1)
    server = Batching(max_batch_size=32, max_queue_size=2048, instances=2)
    assert server.overridden(BatchingConfig(max_batch_size=4)) == Batching(4, 0.0, 2048, 2)
    assert server.overridden(BatchingConfig(instances=1)).instances == 1
    assert server.overridden(BatchingConfig(instances=8)).instances == 2  # the server's runs at once
    assert server.overridden(BatchingConfig()) == server
    for bad, problem in [({"max_batch_size": 0}, "max_batch_size must be a positive integer, got 0"),
                         ({"instances": 1.5}, "instances must be a positive integer, got 1.5"),
                         ({"instances": True}, "instances must be a positive integer, got true")]:
        configure(tmp_path, "a", **bad)
        with pytest.raises(RepositoryError, match=problem):
            ModelConfig.read(tmp_path / "a")


@pytest.fixture
def repository(tmp_path):
    root = tmp_path / "repository"
    add_version(root, "alpha", 1)
    configure(root, "alpha", max_batch_size=4, instances=1)
    add_version(root, "beta", 1, seed=7)
    return root


def test_each_model_runs_by_its_own_batching_and_says_so(server_factory, repository):
    srv = server_factory(model_repository=str(repository), max_batch_size=16, instances=2)
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.ClassifierStub(channel)
        assert len(classify(stub, 10, "alpha").probabilities) == 10 * 10
        assert len(classify(stub, 10, "beta").probabilities) == 10 * 10
        assert runs(srv, "alpha", "1") == (3, 10)  # 4 + 4 + 2
        assert runs(srv, "beta", "1") == (1, 10)  # the server's 16

        info = {m: stub.GetModelInfo(pb.GetModelInfoRequest(model_name=m), timeout=10)
                for m in ("alpha", "beta")}
        assert (info["alpha"].max_batch_size, info["beta"].max_batch_size) == (4, 16)
        listed = stub.ListModels(pb.ListModelsRequest(), timeout=10)
        assert [(m.name, m.max_batch_size) for m in listed.models] == [("alpha", 4), ("beta", 16)]
    with httpx.Client(base_url=srv.http_address, timeout=10) as http:
        groups = {m: http.get(f"/v2/models/{m}/config").json()["instance_group"][0]["count"]
                  for m in ("alpha", "beta")}
        assert groups == {"alpha": 1, "beta": 2}


def test_a_batching_change_while_serving_reloads_the_model(server_factory, repository, caplog):
    caplog.set_level(logging.INFO, logger="cifar10_serving.dataplane.models")
    srv = server_factory(model_repository=str(repository), max_batch_size=16, reload_interval_s=0.05)
    before = srv.plane.models.select("alpha")
    configure(repository, "alpha", max_batch_size=8)
    wait_until(lambda: srv.plane.models.select("alpha") is not before)
    assert srv.plane.batching_of(srv.plane.models.select("alpha")).max_batch_size == 8
    assert srv.plane.models.select("beta") is not None
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.ClassifierStub(channel)
        classify(stub, 10, "alpha")
        assert runs(srv, "alpha", "1") == (2, 10)  # 8 + 2
        assert stub.GetModelInfo(pb.GetModelInfoRequest(model_name="alpha"),
                                 timeout=10).max_batch_size == 8
    assert "model swapped: alpha version 1 -> alpha version 1" in caplog.text


def test_a_batch_size_the_queue_cannot_hold_is_refused_naming_it(server_factory, repository, caplog):
    configure(repository, "alpha", max_batch_size=64)
    srv = server_factory(model_repository=str(repository), max_queue_size=32, max_batch_size=8)
    assert [info.name for info in srv.plane.models.infos()] == ["beta"]
    assert "alpha's config.json: max_batch_size 64 is more than the server's max_queue_size 32" \
        in caplog.text
