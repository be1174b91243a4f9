"""The Open Inference Protocol service against Triton's own client (tritonclient.grpc).

The client runs in a subprocess under the separate Triton venv (``.venv-triton``, made by
``bash bench/setup_triton_env.sh``; ``TRITON_PYTHON`` overrides the interpreter): its
generated ``inference.*`` messages clash with ours in one process. The server is the real
one (BackgroundServer, real onnxruntime) on port 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from cifar10_serving.grpc_api.inference import SERVICE_NAME
from cifar10_protos.inference import grpc_service_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
CHECKS = Path(__file__).with_name("triton_client_checks.py")
MAX_IMAGES = 16


def triton_python() -> str | None:
    path = os.environ.get("TRITON_PYTHON") or str(ROOT / ".venv-triton" / "bin" / "python")
    return path if Path(path).exists() else None


def ensure_triton_python() -> str:
    """The Triton venv's python; under CI (or TRITON_SETUP=1) it is created when missing."""
    python = triton_python()
    if python is None and (os.environ.get("CI") or os.environ.get("TRITON_SETUP")):
        done = subprocess.run(["bash", str(ROOT / "bench" / "setup_triton_env.sh")],
                              capture_output=True, text=True, timeout=900, cwd=ROOT)
        python = triton_python()
        if python is None:
            pytest.skip(f"could not create .venv-triton: {done.stderr.strip()[-500:]}")
    if python is None:
        pytest.skip("no Triton client venv (.venv-triton): run `bash bench/setup_triton_env.sh`")
    return python


def run_checks(*args: str) -> dict:
    python = ensure_triton_python()
    done = subprocess.run(
        [python, str(CHECKS), *args], capture_output=True, text=True, timeout=120, cwd="/"
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


def images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    from tests.tiny_model import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("model") / "tiny-cnn.onnx")


@pytest.fixture(scope="module")
def triton_server(model_path):
    from cifar10_serving.testing import BackgroundServer
    from cifar10_serving.settings import Settings

    settings = Settings(
        model_path=str(model_path), host="127.0.0.1", port=0, http_port=0, metrics_port=-1,
        reload_interval_s=0.0, max_images_per_request=MAX_IMAGES, grace_seconds=1.0,
    )
    server = BackgroundServer(settings).start()
    yield server
    server.stop(grace=0.0)


@pytest.fixture(scope="module")
def results(triton_server):
    return run_checks(f"127.0.0.1:{triton_server.port}", "tiny-cnn", str(MAX_IMAGES))


def expected(model_path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"images": batch})[0]


def test_health_and_readiness(results):
    assert results["live"] is True and results["ready"] is True
    assert results["model_ready"] is True and results["model_ready_v1"] is True
    assert results["model_ready_unknown"] is False
    assert results["model_ready_unknown_version"] is False
    assert results["ready_after"] is True  # no client mistake stopped the server


def test_server_and_model_metadata(results):
    server = results["server_metadata"]
    assert server["name"] == "cifar10-serving"
    assert set(server["extensions"]) >= {"classification", "model_configuration", "statistics"}
    model = results["model_metadata"]
    assert model["name"] == "tiny-cnn" and model["versions"] == ["1"]
    assert model["platform"] == "onnxruntime_onnx"
    assert model["inputs"] == [
        {"name": "images", "datatype": "UINT8", "shape": ["-1", "32", "32", "3"]}
    ]
    assert model["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": ["-1", "10"]}
    ]


def test_model_config_for_perf_analyzer(results):
    config = results["model_config"]["config"]
    assert config["name"] == "tiny-cnn"
    assert config["max_batch_size"] == MAX_IMAGES
    assert config["input"] == [{"name": "images", "data_type": "TYPE_UINT8",
                                "format": "FORMAT_NHWC", "dims": ["32", "32", "3"]}]
    assert config["output"] == [{"name": "probabilities", "data_type": "TYPE_FP32",
                                 "dims": ["10"]}]
    assert "dynamic_batching" in config and "sequence_batching" not in config


def test_infer_raw_matches_onnxruntime(results, model_path):
    infer = results["infer_raw"]
    assert infer["output"] == {"name": "probabilities", "datatype": "FP32", "shape": ["3", "10"]}
    assert infer["id"] == "req-1"
    assert (infer["model_name"], infer["model_version"]) == ("tiny-cnn", "1")
    want = expected(model_path, images(3, seed=1))
    np.testing.assert_allclose(np.array(infer["probabilities"]), want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.array(results["infer_requested_output"]), want, rtol=1e-5,
                               atol=1e-7)


def test_infer_typed_contents(results, model_path):
    typed = results["infer_typed"]
    assert typed["id"] == "typed" and typed["datatype"] == "FP32" and typed["shape"] == [2, 10]
    assert typed["same_as_raw"] is True
    want = expected(model_path, images(2, seed=2))
    np.testing.assert_allclose(np.array(typed["probabilities"]), want, rtol=1e-5, atol=1e-7)


def test_classification_extension(results, model_path):
    from cifar10_core import contract

    cls = results["classification"]
    assert cls["datatype"] == "BYTES" and cls["shape"] == [3, 3]
    want = expected(model_path, images(3, seed=1))
    for row, probs in zip(cls["values"], want):
        order = np.argsort(-probs, kind="stable")[:3]
        assert row == [f"{probs[i]:f}:{i}:{contract.CLASS_NAMES[i]}" for i in order]


BAD_INPUTS = {
    "wrong datatype": "datatype FP32; expected UINT8",
    "wrong shape": "has shape [3, 32, 96]",
    "wrong input name": "unknown input 'pixels'",
    "unknown model": "unknown model 'no-such-model'",
    "unknown version": "unknown version '999'",
    "zero images": "zero images",
    "too many images": f"{MAX_IMAGES + 1} images; at most {MAX_IMAGES} per request",
    "unknown output": "unknown output 'logits'",
    "missing input": "missing input",
    "byte length": "needs 6144 bytes of raw_input_contents, got 3072",
    "typed over 255": "holds 300, above 255",
    "unknown model metadata": "unknown model 'no-such-model'",
    "unknown model config": "unknown model 'no-such-model'",
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_client_mistakes_are_invalid_argument(results, case):
    error = results["errors"][case]
    assert error is not None, f"{case}: the call succeeded"
    code, message = error
    assert code == ("NOT_FOUND" if case.startswith("unknown model") or case == "unknown version"
                    else "INVALID_ARGUMENT"), error
    assert BAD_INPUTS[case] in message, error


def test_stream_answers_in_order_and_survives_a_bad_message(results):
    stream = results["stream"]
    assert [s[0] for s in stream] == ["ok", "ok", "error", "ok"]
    assert [s[1] for s in stream if s[0] == "ok"] == ["s0", "s1", "s3"]
    assert "INVALID_ARGUMENT" in stream[2][1] and "datatype FP32" in stream[2][1]


def test_statistics(results):
    (stats,) = results["statistics"]["model_stats"]
    assert (stats["name"], stats["version"]) == ("tiny-cnn", "1")
    assert int(stats["inference_stats"]["success"]["count"]) >= 5
    assert int(stats["inference_stats"]["queue"]["count"]) >= 5  # perf_analyzer needs it
    assert int(stats["inference_count"]) >= 14


def _our_messages() -> dict:
    out: dict = {}

    def walk(desc):
        out[desc.full_name] = desc
        for nested in desc.nested_types:
            walk(nested)

    for desc in pb.DESCRIPTOR.message_types_by_name.values():
        walk(desc)
    return out


def test_wire_compatible_with_tritons_protos():
    """Every message, field, enum value and method we declare matches Triton's numbering."""
    triton = run_checks("--descriptors")
    assert SERVICE_NAME == triton["service"] == "inference.GRPCInferenceService"
    ours = _our_messages()
    missing = sorted(set(ours) - set(triton["messages"]))
    assert not missing, f"messages Triton does not have: {missing}"
    for name, desc in ours.items():
        theirs = triton["messages"][name]
        for field in desc.fields:
            assert field.name in theirs, f"{name}.{field.name} is not in Triton's {name}"
            number, ftype, label, type_name = theirs[field.name]
            sub = field.message_type or field.enum_type
            assert (field.number, field.type, sub.full_name if sub else "") == (
                number, ftype, type_name), f"{name}.{field.name} differs from Triton's"
    for enum in pb.DESCRIPTOR.enum_types_by_name.values():
        assert {v.name: v.number for v in enum.values}.items() <= triton["enums"][
            enum.full_name].items()
    for desc in ours.values():
        for enum in desc.enum_types:
            assert {v.name: v.number for v in enum.values}.items() <= triton["enums"][
                enum.full_name].items()
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        their_in, their_out, client_stream, server_stream = triton["methods"][method.name]
        assert (method.input_type.full_name, method.output_type.full_name) == (
            their_in, their_out)
        assert (method.client_streaming, method.server_streaming) == (
            client_stream, server_stream)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
