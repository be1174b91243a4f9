"""A model repository changed while it is served: new versions and models are loaded, checked
and warmed before they are served, removed ones stop being served, a broken file never
replaces a good version (logged once, counted once), and no request fails meanwhile. Real
servers polling real folders, real gRPC clients."""

from __future__ import annotations

import gc
import logging
import shutil
import threading
import time

import grpc
import numpy as np
import pytest

from cifar10_protos.inference import grpc_service_pb2 as pb
from cifar10_protos.inference import grpc_service_pb2_grpc as pb_grpc
from cifar10_serving.onnx_model import OnnxModel
from tests.serving import models
from tests.serving.test_model_repository import add_version

POLL_S = 0.05


def wait_until(condition, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "the server never reached the expected state"
        time.sleep(0.01)


def served(srv) -> list[tuple[str, str]]:
    return [(info.name, info.version) for info in srv.plane.models.infos()]


def infer(stub, array: np.ndarray, model: str, version: str = "") -> tuple[str, np.ndarray]:
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    request.inputs.add(name="images", datatype="UINT8", shape=list(array.shape))
    request.raw_input_contents.append(array.tobytes())
    response = stub.ModelInfer(request, timeout=30)
    return response.model_version, np.frombuffer(response.raw_output_contents[0],
                                                 "<f4").reshape(len(array), 10)


def images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


def test_new_versions_and_models_are_served_and_removed_ones_are_not(server_factory, tmp_path,
                                                                     caplog):
    caplog.set_level(logging.INFO, logger="cifar10_serving.dataplane.models")
    root = tmp_path / "repository"
    add_version(root, "alpha", 1)
    srv = server_factory(model_repository=str(root), reload_interval_s=POLL_S)
    array = images(3, seed=0)
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        path = add_version(root, "alpha", 2)
        wait_until(lambda: served(srv) == [("alpha", "2")])  # latest 1: version 1 goes
        version, probabilities = infer(stub, array, "alpha")
        assert version == "2"
        np.testing.assert_allclose(probabilities, OnnxModel.load(path).predict(array),
                                   rtol=1e-5, atol=1e-7)

        add_version(root, "beta", 1)
        wait_until(lambda: ("beta", "1") in served(srv))
        assert infer(stub, array, "beta")[0] == "1"

        shutil.rmtree(root / "alpha" / "2")  # back to version 1
        shutil.rmtree(root / "beta")
        wait_until(lambda: served(srv) == [("alpha", "1")])
        assert infer(stub, array, "alpha")[0] == "1"
        # drained, then unloaded: nothing holds the versions removed once answered
        gc.collect()
        unloaded = [r.getMessage() for r in caplog.records if r.getMessage().endswith(
            "unloaded: its last request answered")]
        assert sorted(unloaded) == ["model alpha version 1 unloaded: its last request answered",
                                    "model alpha version 2 unloaded: its last request answered",
                                    "model beta version 1 unloaded: its last request answered"]
        with pytest.raises(grpc.RpcError) as gone:
            infer(stub, array, "beta")
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    assert srv.metrics.reloads.labels("ok")._value.get() == 3  # alpha 2, beta 1, alpha 1 again
    assert srv.metrics.reloads.labels("rejected")._value.get() == 0


def test_a_broken_file_never_replaces_a_good_version_and_is_reported_once(
        server_factory, tmp_path, caplog):
    root = tmp_path / "repository"
    add_version(root, "alpha", 1)
    srv = server_factory(model_repository=str(root), reload_interval_s=POLL_S)
    rejected = srv.metrics.reloads.labels("rejected")
    caplog.set_level(logging.ERROR, logger="cifar10_serving.dataplane.models")

    (root / "alpha" / "2").mkdir()
    (root / "alpha" / "2" / "model.onnx").write_bytes(b"not an onnx model")
    wait_until(lambda: rejected._value.get() == 1)
    time.sleep(20 * POLL_S)  # many more polls: none loads it again
    assert rejected._value.get() == 1 and served(srv) == [("alpha", "1")]

    (root / "alpha" / "3").mkdir()
    models.float_input(root / "alpha" / "3" / "model.onnx")  # loads, breaks the contract
    wait_until(lambda: rejected._value.get() == 2)
    time.sleep(20 * POLL_S)
    assert rejected._value.get() == 2 and served(srv) == [("alpha", "1")]
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 2, refusals
    assert "still serving" not in refusals[0] and "alpha/2/model.onnx" in refusals[0]
    assert "uint8" in refusals[1] or "UINT8" in refusals[1].upper()

    add_version(root, "alpha", 3)  # mended: served
    wait_until(lambda: served(srv) == [("alpha", "3")])
    assert srv.metrics.reloads.labels("ok")._value.get() == 1


def test_no_request_fails_while_versions_come_and_go_under_load(server_factory, tmp_path):
    """Clients keep calling two models (no version: the newest) while versions are added and
    removed; every call is answered, by a version that was served, with that version's rows."""
    root = tmp_path / "repository"
    add_version(root, "alpha", 1)
    add_version(root, "beta", 1)
    srv = server_factory(model_repository=str(root), reload_interval_s=POLL_S, max_batch_size=4,
                         instances=2, threads=2)
    answers: list[tuple[str, np.ndarray, str, np.ndarray]] = []
    errors: list[Exception] = []
    stop = threading.Event()

    def client(seed: int, model: str) -> None:
        with grpc.insecure_channel(srv.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            i = 0
            while not stop.is_set():
                array = images(6, seed=seed * 10_000 + i)
                i += 1
                try:
                    answers.append((model, array, *infer(stub, array, model)))
                except Exception as exc:  # reported below
                    errors.append(exc)
                    return

    threads = [threading.Thread(target=client, args=(seed, model))
               for seed, model in enumerate(["alpha", "alpha", "beta", "beta"])]
    for thread in threads:
        thread.start()
    try:
        for version in (2, 3, 4):
            seen = len(answers)
            add_version(root, "alpha", version)
            wait_until(lambda: ("alpha", str(version)) in served(srv) and len(answers) > seen + 10
                       or errors)
            shutil.rmtree(root / "alpha" / str(version - 1))
            add_version(root, "beta", version)
            wait_until(lambda: ("beta", str(version)) in served(srv) or errors)
            seen = len(answers)
            wait_until(lambda: len(answers) > seen + 10 or errors)
        shutil.rmtree(root / "beta" / "4")  # a version removed: the previous one comes back
        wait_until(lambda: ("beta", "3") in served(srv) or errors)
        seen = len(answers)
        wait_until(lambda: len(answers) > seen + 10 or errors)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert not errors, errors
    assert {(m, v) for m, _, v, _ in answers} >= {("alpha", "1"), ("alpha", "4"), ("beta", "4"),
                                                   ("beta", "3")}
    expected = {}
    for model, array, version, probabilities in answers:
        key = (model, version)
        if key not in expected:  # seed = version (add_version), whatever the model
            expected[key] = OnnxModel.load(_model_file(tmp_path, int(version)))
        np.testing.assert_allclose(probabilities, expected[key].predict(array),
                                   rtol=1e-5, atol=1e-7, err_msg=f"rows not all from {key}")


def _model_file(tmp_path, seed: int):
    from tests.tiny_model import write_tiny_model

    return write_tiny_model(tmp_path / f"check-{seed}.onnx", seed=seed)
