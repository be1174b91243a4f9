"""Triton's repository extension (``--model-control explicit``): the index, load and unload
over gRPC and REST, on a real server with a repository of tiny models; off by default."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import grpc
import httpx
import pytest

from cifar10_protos.inference import grpc_service_pb2 as pb
from cifar10_protos.inference import grpc_service_pb2_grpc as pb_grpc
from tests.serving.test_model_repository import add_version


@pytest.fixture
def repository(tmp_path):
    root = tmp_path / "repository"
    add_version(root, "alpha", 1)
    add_version(root, "beta", 1)
    return root


def served(srv) -> list[tuple[str, str]]:
    return [(info.name, info.version) for info in srv.plane.models.infos()]


def index(stub, ready: bool = False) -> list[tuple[str, str, str, str]]:
    answer = stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=ready), timeout=10)
    return [(m.name, m.version, m.state, m.reason) for m in answer.models]


def test_explicit_mode_over_grpc(server_factory, repository):
    srv = server_factory(model_repository=str(repository), model_control="explicit",
                         reload_interval_s=0.05)
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert "model_repository" in stub.ServerMetadata(pb.ServerMetadataRequest()).extensions
        assert index(stub) == [("alpha", "1", "READY", ""), ("beta", "1", "READY", "")]

        stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="beta"), timeout=10)
        assert served(srv) == [("alpha", "1")]
        assert index(stub) == [("alpha", "1", "READY", ""), ("beta", "", "UNAVAILABLE", "unloaded")]
        assert index(stub, ready=True) == [("alpha", "1", "READY", "")]
        assert not stub.ModelReady(pb.ModelReadyRequest(name="beta"), timeout=10).ready

        add_version(repository, "alpha", 2)
        time.sleep(0.3)  # no polling in this mode: version 2 waits for a load
        assert served(srv) == [("alpha", "1")]
        stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="alpha"), timeout=30)
        assert served(srv) == [("alpha", "2")]
        stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="beta"), timeout=30)
        assert served(srv) == [("alpha", "2"), ("beta", "1")]

        for call, request, code, message in [
            (stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="gamma"),
             grpc.StatusCode.NOT_FOUND, "no model 'gamma' in the model repository"),
            (stub.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name="gamma"),
             grpc.StatusCode.NOT_FOUND, "unknown model 'gamma'"),
            (stub.RepositoryIndex, pb.RepositoryIndexRequest(repository_name="other"),
             grpc.StatusCode.INVALID_ARGUMENT, "unknown repository 'other'"),
        ]:
            with pytest.raises(grpc.RpcError) as refused:
                call(request, timeout=10)
            assert refused.value.code() == code and message in refused.value.details()
        with_config = pb.RepositoryModelLoadRequest(model_name="alpha")
        with_config.parameters["config"].string_param = "{}"
        with pytest.raises(grpc.RpcError) as refused:
            stub.RepositoryModelLoad(with_config, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "parameters are not accepted here: ['config']" in refused.value.details()

        shutil.rmtree(repository / "beta")  # no polling: still served, so still in the index
        assert index(stub) == [("alpha", "2", "READY", ""), ("beta", "1", "READY", "")]

        stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="alpha"), timeout=10)
        with pytest.raises(grpc.RpcError) as last:
            stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="beta"),
                                       timeout=10)
        assert last.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "the only model served" in last.value.details()


def test_explicit_mode_over_rest(server_factory, repository):
    srv = server_factory(model_repository=str(repository), model_control="explicit")
    with httpx.Client(base_url=srv.http_address, timeout=30) as http:
        assert "model_repository" in http.get("/v2").json()["extensions"]
        assert http.post("/v2/repository/index").json() == [
            {"name": "alpha", "version": "1", "state": "READY", "reason": ""},
            {"name": "beta", "version": "1", "state": "READY", "reason": ""}]
        assert http.post("/v2/repository/models/beta/unload").json() == {}
        assert http.get("/v2/models/beta/ready").status_code == 404
        assert http.post("/v2/repository/index", json={"ready": True}).json() == [
            {"name": "alpha", "version": "1", "state": "READY", "reason": ""}]
        assert http.post("/v2/repository/models/beta/load").status_code == 200
        assert http.get("/v2/models/beta/ready").json() == {"name": "beta", "ready": True}
        missing = http.post("/v2/repository/models/gamma/load")
        assert missing.status_code == 404 and "no model 'gamma'" in missing.json()["error"]
        assert http.post("/v2/repository/index", content=b"[1]").status_code == 400
        refused = http.post("/v2/repository/models/beta/load",
                            json={"parameters": {"config": "{}"}})
        assert refused.status_code == 400 and "parameters" in refused.json()["error"]


def test_off_by_default(server_factory, repository):
    srv = server_factory(model_repository=str(repository))
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert "model_repository" not in stub.ServerMetadata(pb.ServerMetadataRequest()).extensions
        with pytest.raises(grpc.RpcError) as off:
            stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10)
        assert off.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with httpx.Client(base_url=srv.http_address, timeout=10) as http:
        assert http.post("/v2/repository/index").status_code == 404


def test_explicit_mode_needs_a_repository():
    from cifar10_serving.settings import Settings

    with pytest.raises(ValueError, match="model_control explicit needs a model repository"):
        Settings(model_control="explicit", model_path="m.onnx")
    with pytest.raises(ValueError, match="model_path and model_repository: give one"):
        Settings(model_path="m.onnx", model_repository="models")
    with pytest.raises(ValueError, match="model_control must be poll or explicit"):
        Settings(model_control="none")


TRITON_SCRIPT = """
import json, sys
import tritonclient.grpc as grpcclient, tritonclient.http as httpclient
g = grpcclient.InferenceServerClient(sys.argv[1])
h = httpclient.InferenceServerClient(sys.argv[2])
seen = [g.get_model_repository_index(as_json=True)["models"]]
g.unload_model("beta")  # tritonclient sends unload_dependents: accepted
seen.append(g.is_model_ready("beta"))
g.load_model("beta")
seen.append(g.is_model_ready("beta"))
h.unload_model("alpha")
seen.append(h.is_model_ready("alpha"))
h.load_model("alpha")
seen += [h.is_model_ready("alpha"), h.get_model_repository_index()]
print(json.dumps(seen))
"""


def test_tritons_clients_load_and_unload(server_factory, repository):
    """Triton's own Python clients (gRPC and HTTP), from the Triton venv."""
    from tests.inference.test_triton_client import ensure_triton_python

    python = ensure_triton_python()
    srv = server_factory(model_repository=str(repository), model_control="explicit")
    done = subprocess.run([python, "-c", TRITON_SCRIPT, srv.address,
                           srv.http_address.removeprefix("http://")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    index, beta_unloaded, beta_loaded, alpha_unloaded, alpha_loaded, rest_index = json.loads(done.stdout)
    assert [(m["name"], m["state"]) for m in index] == [("alpha", "READY"), ("beta", "READY")]
    assert (beta_unloaded, beta_loaded, alpha_unloaded, alpha_loaded) == (False, True, False, True)
    assert [m["name"] for m in rest_index] == ["alpha", "beta"]
