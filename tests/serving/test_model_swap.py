"""A request is answered by one model: every row of an answer is computed by exactly the model
version it names, also for requests larger than the max batch (split into chunks) that are
in flight while the model is swapped. Real server, real clients (Open Inference API, whose
answer carries the raw probabilities)."""

from __future__ import annotations

import os
import threading
import time

import grpc
import numpy as np

from cifar10_serving.onnx_model import OnnxModel
from cifar10_protos.inference import grpc_service_pb2 as pb
from cifar10_protos.inference import grpc_service_pb2_grpc as pb_grpc
from tests.serving import models
from tests.serving.models import model_runs

MAX_BATCH = 4


def images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


def infer_request(array: np.ndarray) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="tiny-cnn")
    request.inputs.add(name="images", datatype="UINT8", shape=list(array.shape))
    request.raw_input_contents.append(array.tobytes())
    return request


def answer(response: pb.ModelInferResponse, count: int) -> tuple[str, np.ndarray]:
    probabilities = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(count, 10)
    return response.model_version, probabilities


def wait_until(condition, timeout: float = 30.0) -> None:
    """Wait for a state of the server (a count), not for time to pass."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "the server never reached the expected state"
        time.sleep(0.001)


class Versions:
    """Two tiny models with different weights: version "1" (seed 0) and "2" (seed 1)."""

    def __init__(self, folder):
        self.files = {v: models.version(folder / f"v{v}.onnx", v, seed=int(v) - 1) for v in "12"}
        self.models = {v: OnnxModel.load(path, threads=1) for v, path in self.files.items()}

    def install(self, version: str, path) -> None:
        """Atomically replace the served file with ``version``."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(self.files[version].read_bytes())
        os.replace(tmp, path)

    def check(self, version: str, array: np.ndarray, probabilities: np.ndarray) -> None:
        np.testing.assert_allclose(probabilities, self.models[version].predict(array),
                                   rtol=1e-5, atol=1e-7, err_msg=f"rows not all from version {version}")


def test_a_split_request_in_flight_across_a_swap_is_computed_by_the_version_it_names(
    server_factory, tmp_path
):
    """Deterministic: a batch runs only when full (a queue delay far longer than the test), so
    the last chunk of a 10-image request is still queued when the model is swapped."""
    versions = Versions(tmp_path)
    path = tmp_path / "model.onnx"
    versions.install("1", path)
    srv = server_factory(model_path=path, max_batch_size=MAX_BATCH, instances=1,
                         max_queue_delay_ms=3_600_000, max_queue_size=64)
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        big = images(10, seed=1)  # chunks of 4, 4 and 2
        pending = stub.ModelInfer.future(infer_request(big), timeout=60)
        wait_until(lambda: model_runs(srv)[0] == 2 and srv.plane.queued == 2)  # 2 rows left

        versions.install("2", path)
        assert srv.plane.models.reload() and srv.plane.models.default.info.version == "2"

        after = [images(2, seed=2), images(2, seed=3)]
        first_after = stub.ModelInfer.future(infer_request(after[0]), timeout=60)
        version, probabilities = answer(pending.result(), len(big))  # its last 2 rows run
        assert version == "1"
        versions.check("1", big, probabilities)

        second_after = stub.ModelInfer.future(infer_request(after[1]), timeout=60)
        for array, future in zip(after, [first_after, second_after]):
            version, probabilities = answer(future.result(), len(array))
            assert version == "2"
            versions.check("2", array, probabilities)
    # the old model's last chunk ran alone: requests of two models never share a run
    assert model_runs(srv) == (4, 14)


def test_answers_name_their_version_while_the_model_file_is_swapped_under_load(
    server_factory, tmp_path
):
    """Clients send requests of three max batches while the file is swapped back and forth;
    every answer's rows are those of the version it names."""
    versions = Versions(tmp_path)
    path = tmp_path / "model.onnx"
    versions.install("1", path)
    srv = server_factory(model_path=path, max_batch_size=MAX_BATCH, instances=2, threads=2)
    answers: list[tuple[np.ndarray, str, np.ndarray]] = []
    errors: list[Exception] = []
    stop = threading.Event()

    def client(seed: int) -> None:
        with grpc.insecure_channel(srv.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            i = 0
            while not stop.is_set():
                array = images(3 * MAX_BATCH, seed=seed * 10_000 + i)
                i += 1
                try:
                    answers.append((array, *answer(stub.ModelInfer(infer_request(array), timeout=60),
                                                   len(array))))
                except Exception as exc:  # reported below
                    errors.append(exc)
                    return

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    try:
        for version in "21212":
            seen = len(answers)
            wait_until(lambda: len(answers) >= seen + 5 or errors)
            versions.install(version, path)
            assert srv.plane.models.reload()
        seen = len(answers)
        wait_until(lambda: len(answers) >= seen + 5 or errors)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert not errors, errors
    assert {version for _, version, _ in answers} == {"1", "2"}
    for array, version, probabilities in answers:
        versions.check(version, array, probabilities)
