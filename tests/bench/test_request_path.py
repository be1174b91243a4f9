"""bench.request_path follows one call through the server's files."""

from __future__ import annotations

from bench.request_path import trace


def test_one_call_goes_from_the_door_through_the_data_plane_to_the_model(tiny_model_path):
    path = trace(str(tiny_model_path))
    files = [name for name, _ in path]
    assert files[0].endswith("grpc_api/methods.py")
    for step in ("grpc_api/classifier.py", "dataplane/plane.py", "dataplane/admission.py",
                 "dataplane/batching.py", "onnx_model.py"):
        assert any(name.endswith(step) for name in files), step
    assert ("dataplane/plane.py", "infer") in [(n.split("cifar10_serving/")[-1], f) for n, f in path]
