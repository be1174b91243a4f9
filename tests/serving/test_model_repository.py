"""A model repository: its layout and version policies read from disk, several models and
versions served at once, selected by name and version, unknown ones refused naming what is
served (NOT_FOUND over gRPC, 404 over HTTP). Real servers on free ports, tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
from cifar10_protos.cifar10.v2 import classifier_pb2_grpc as pb_grpc
from cifar10_protos.inference import grpc_service_pb2 as ipb
from cifar10_protos.inference import grpc_service_pb2_grpc as ipb_grpc
from cifar10_serving.dataplane.repository import (
    ModelConfig,
    Repository,
    RepositoryError,
    VersionPolicy,
)
from tests.tiny_model import write_tiny_model


def add_version(root: Path, name: str, version: int, seed: int | None = None) -> Path:
    """``<root>/<name>/<version>/model.onnx``: a tiny model whose answers depend on ``seed``."""
    folder = root / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    return write_tiny_model(folder / "model.onnx", name="ignored-by-the-repository",
                            version="0", seed=version if seed is None else seed)


def configure(root: Path, name: str, **config) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "config.json").write_text(json.dumps(config))


def raw_request(model: str = "", version: str = "") -> pb.ClassifyRequest:
    pixels = np.full((32, 32, 3), 7, np.uint8).tobytes()
    return pb.ClassifyRequest(images=[pb.Image(raw=pb.RawImage(data=pixels, height=32, width=32,
                                                               channels=3))],
                              model_name=model, model_version=version)


# -- the layout on disk -------------------------------------------------------------------


def test_the_layout_and_version_policies(tmp_path):
    for version in (1, 2, 3, 10):
        add_version(tmp_path, "a", version)
    add_version(tmp_path, "b", 1)
    add_version(tmp_path, "b", 4)
    configure(tmp_path, "b", version_policy={"all": {}}, default=True)
    (tmp_path / "a" / "7").mkdir()  # no model file: not a version
    (tmp_path / "a" / "02").mkdir()  # not written plainly: not a version
    (tmp_path / "a" / "02" / "model.onnx").write_bytes(b"x")
    (tmp_path / "a" / "latest").mkdir()
    (tmp_path / ".hidden" / "1").mkdir(parents=True)
    (tmp_path / "README.md").write_text("not a model")

    listing = Repository(tmp_path).scan()
    assert [(s.name, s.version) for s in listing.slots] == [
        ("a", "10"), ("a", "3"), ("a", "2"), ("a", "1"), ("b", "4"), ("b", "1")]
    chosen = listing.chosen(lambda slot: True)
    assert [(s.name, s.version) for s in chosen] == [("a", "10"), ("b", "4"), ("b", "1")]
    assert chosen[0].path == str(tmp_path / "a" / "10" / "model.onnx")
    assert listing.default == "b" and not listing.problems
    # a version that does not load leaves the policy to choose among the others
    chosen = listing.chosen(lambda slot: slot.version not in ("10", "4"))
    assert [(s.name, s.version) for s in chosen] == [("a", "3"), ("b", "1")]

    assert VersionPolicy(latest=2).choose([1, 3, 2]) == [3, 2]
    assert VersionPolicy(specific=(1, 3, 9)).choose([1, 2, 3]) == [3, 1]
    assert VersionPolicy(every=True).choose([2, 1]) == [2, 1]
    assert VersionPolicy.parse({"latest": 3}) == VersionPolicy(latest=3)
    assert VersionPolicy.parse({"specific": [3, 1]}) == VersionPolicy(specific=(1, 3))


@pytest.mark.parametrize("config, problem", [
    ("{not json", "not JSON"),
    ("[]", "a JSON object"),
    ('{"version_policy": {"latest": 0}}', "latest takes a positive integer"),
    ('{"version_policy": {"newest": 1}}', "latest takes"),
    ('{"version_policy": {"latest": 1, "all": {}}}', "must be one of"),
    ('{"version_policy": {"specific": []}}', "specific a list"),
    ('{"default": "yes"}', "default must be true or false"),
    ('{"max_batch": 4}', "unknown keys ['max_batch']"),
])
def test_a_config_that_does_not_read_is_named_and_its_model_kept_as_it_is(tmp_path, config, problem):
    add_version(tmp_path, "a", 1)
    (tmp_path / "a" / "config.json").write_text(config)
    with pytest.raises(RepositoryError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        ModelConfig.read(tmp_path / "a")
    listing = Repository(tmp_path).scan()
    assert listing.chosen(lambda slot: True) == [] and listing.held == {"a"}
    assert problem in listing.problems[0]


def test_a_repository_that_cannot_be_listed_fails_the_start_naming_it(server_factory, tmp_path):
    from cifar10_core.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="cannot list the model repository"):
        server_factory(model_repository=str(tmp_path / "missing"))
    with pytest.raises(ModelLoadError, match="no model to serve"):
        server_factory(model_repository=str(tmp_path))


# -- several models and versions served ------------------------------------------------------


@pytest.fixture
def repository(tmp_path):
    root = tmp_path / "repository"
    for version in (1, 2, 3):
        add_version(root, "alpha", version)
    configure(root, "alpha", version_policy={"latest": 2})
    add_version(root, "beta", 5, seed=50)
    return root


def test_requests_select_a_model_and_version_and_unknown_ones_are_not_found(
        server_factory, repository):
    srv = server_factory(model_repository=str(repository))
    assert [(i.name, i.version) for i in srv.plane.models.infos()] == [
        ("alpha", "3"), ("alpha", "2"), ("beta", "5")]
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.ClassifierStub(channel)
        answers = {}
        for model, version in [("", ""), ("alpha", ""), ("alpha", "2"), ("beta", ""),
                               ("beta", "5")]:
            answer = stub.Classify(raw_request(model, version), timeout=10)
            answers[model, version] = answer
            assert answer.model_name == (model or "alpha")
        assert answers["", ""].model_version == "3"  # the default model's newest version
        assert answers["alpha", "2"].model_version == "2"
        assert answers["beta", ""].model_version == "5"
        assert answers["alpha", "2"].probabilities != answers["alpha", ""].probabilities
        images = srv.metrics.images  # every metric of the data plane names the version
        assert [images.labels(*key)._value.get() for key in [("alpha", "3"), ("alpha", "2"),
                                                             ("beta", "5")]] == [2, 1, 2]
        assert srv.metrics.batch_size.labels("beta", "5")._sum.get() == 2

        with pytest.raises(grpc.RpcError) as unknown:
            stub.Classify(raw_request("gamma"), timeout=10)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert unknown.value.details() == ("unknown model 'gamma': this server serves 'alpha' "
                                           "(versions '3', '2'), 'beta' (version '5')")
        with pytest.raises(grpc.RpcError) as old:
            stub.Classify(raw_request("alpha", "1"), timeout=10)  # on disk, outside the policy
        assert old.value.code() == grpc.StatusCode.NOT_FOUND
        assert "unknown version '1' of model 'alpha'" in old.value.details()
        assert "versions '3', '2'" in old.value.details()

        info = stub.GetModelInfo(pb.GetModelInfoRequest(model_name="alpha", model_version="2"),
                                 timeout=10)
        assert (info.name, info.version, info.metadata["model_version"]) == ("alpha", "2", "0")
        assert stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10).version == "3"
        with pytest.raises(grpc.RpcError) as missing:
            stub.GetModelInfo(pb.GetModelInfoRequest(model_name="beta", model_version="1"),
                              timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        listed = stub.ListModels(pb.ListModelsRequest(), timeout=10)
        assert [(m.name, m.version) for m in listed.models] == [
            ("alpha", "3"), ("alpha", "2"), ("beta", "5")]
        assert listed.default_model == "alpha"

        oip = ipb_grpc.GRPCInferenceServiceStub(channel)
        assert oip.ModelReady(ipb.ModelReadyRequest(name="beta"), timeout=10).ready
        assert not oip.ModelReady(ipb.ModelReadyRequest(name="alpha", version="1"), timeout=10).ready
        meta = oip.ModelMetadata(ipb.ModelMetadataRequest(name="alpha", version="2"), timeout=10)
        assert (meta.name, list(meta.versions)) == ("alpha", ["2"])

    with httpx.Client(base_url=srv.http_address, timeout=10) as http:
        assert http.get("/v2/models/beta/ready").status_code == 200
        assert http.get("/v2/models/alpha/versions/2").json()["versions"] == ["2"]
        missing = http.get("/v2/models/alpha/versions/1")
        assert missing.status_code == 404
        assert "this server serves versions '3', '2'" in missing.json()["error"]
        assert http.get("/v1/model", params={"model": "beta"}).json()["version"] == "5"
        assert http.get("/v1/model", params={"model": "gamma"}).status_code == 404


def test_the_default_model_is_the_configs_or_the_settings(server_factory, repository):
    configure(repository, "beta", default=True)
    srv = server_factory(model_repository=str(repository))
    assert srv.plane.models.default.name == "beta"
    srv = server_factory(model_repository=str(repository), default_model="alpha")
    assert srv.plane.models.default.name == "alpha"


def test_a_broken_version_at_start_is_left_out(server_factory, repository):
    (repository / "alpha" / "3" / "model.onnx").write_bytes(b"not onnx")
    srv = server_factory(model_repository=str(repository))
    # latest 2 among the versions that load
    assert [(i.name, i.version) for i in srv.plane.models.infos()] == [
        ("alpha", "2"), ("alpha", "1"), ("beta", "5")]
