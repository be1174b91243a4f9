"""Drive our Open Inference Protocol service with Triton's own client; print JSON results.

Runs in the separate Triton-client venv (``.venv-triton``, see bench/setup_triton_env.sh),
never in the project's process: tritonclient's generated ``inference.*`` messages clash
with ours in one protobuf descriptor pool. Imports nothing from this repository.

    python tests/inference/triton_client_checks.py HOST:PORT MODEL_NAME MAX_IMAGES
    python tests/inference/triton_client_checks.py --descriptors

The pytest side (tests/inference/test_triton_client.py) asserts on the JSON.
"""

from __future__ import annotations

import json
import queue
import sys

import numpy as np


def images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


def descriptors() -> dict:
    """Field numbers/types of Triton's messages and its service's methods."""
    from google.protobuf import descriptor as d
    from tritonclient.grpc import model_config_pb2, service_pb2

    messages: dict = {}
    enums: dict = {}

    def walk_message(desc: d.Descriptor) -> None:
        messages[desc.full_name] = {
            f.name: [f.number, f.type, f.label if hasattr(f, "label") else 0,
                     f.message_type.full_name if f.message_type else
                     (f.enum_type.full_name if f.enum_type else "")]
            for f in desc.fields
        }
        for nested in desc.nested_types:
            walk_message(nested)
        for enum in desc.enum_types:
            enums[enum.full_name] = {v.name: v.number for v in enum.values}

    for module in (service_pb2, model_config_pb2):
        for desc in module.DESCRIPTOR.message_types_by_name.values():
            walk_message(desc)
        for enum in module.DESCRIPTOR.enum_types_by_name.values():
            enums[enum.full_name] = {v.name: v.number for v in enum.values}
    service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    methods = {
        m.name: [m.input_type.full_name, m.output_type.full_name,
                 m.client_streaming if hasattr(m, "client_streaming") else None,
                 m.server_streaming if hasattr(m, "server_streaming") else None]
        for m in service.methods
    }
    return {"service": service.full_name, "messages": messages, "enums": enums,
            "methods": methods}


def error_of(call) -> list | None:
    """[status code name, message] of a failing call; None if it succeeded."""
    from tritonclient.utils import InferenceServerException

    try:
        call()
    except InferenceServerException as exc:
        status = str(exc.status() or "")
        return [status.replace("StatusCode.", ""), exc.message()]
    return None


def raw_error(stub, request) -> list | None:
    import grpc

    try:
        stub.ModelInfer(request, timeout=10)
    except grpc.RpcError as exc:
        return [exc.code().name, exc.details()]
    return None


def run(address: str, model: str, max_images: int) -> dict:
    import grpc
    import tritonclient.grpc as tc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    client = tc.InferenceServerClient(address)
    out: dict = {}
    out["live"] = client.is_server_live()
    out["ready"] = client.is_server_ready()
    out["model_ready"] = client.is_model_ready(model)
    out["model_ready_v1"] = client.is_model_ready(model, "1")
    out["model_ready_unknown"] = client.is_model_ready("no-such-model")
    out["model_ready_unknown_version"] = client.is_model_ready(model, "999")
    out["server_metadata"] = client.get_server_metadata(as_json=True)
    out["model_metadata"] = client.get_model_metadata(model, as_json=True)
    out["model_config"] = client.get_model_config(model, as_json=True)

    # ModelInfer through tritonclient: raw_input_contents (what it always sends).
    x = images(3, seed=1)
    inp = tc.InferInput("images", list(x.shape), "UINT8")
    inp.set_data_from_numpy(x)
    result = client.infer(model, [inp], request_id="req-1")
    response = result.get_response(as_json=True)
    out["infer_raw"] = {
        "probabilities": result.as_numpy("probabilities").tolist(),
        "output": response["outputs"][0],
        "id": response.get("id", ""),
        "model_name": response.get("model_name"),
        "model_version": response.get("model_version"),
    }
    requested = tc.InferRequestedOutput("probabilities")
    out["infer_requested_output"] = client.infer(
        model, [inp], outputs=[requested]
    ).as_numpy("probabilities").tolist()

    # Classification extension.
    top = tc.InferRequestedOutput("probabilities", class_count=3)
    result = client.infer(model, [inp], outputs=[top])
    strings = result.as_numpy("probabilities")
    out["classification"] = {
        "shape": list(strings.shape),
        "datatype": result.get_response(as_json=True)["outputs"][0]["datatype"],
        "values": [[s.decode() for s in row] for row in strings],
    }

    # Typed contents (InferTensorContents.uint_contents) with Triton's generated stub.
    channel = grpc.insecure_channel(address)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    y = images(2, seed=2)

    def typed_request(array=y) -> service_pb2.ModelInferRequest:
        request = service_pb2.ModelInferRequest(model_name=model, id="typed")
        tensor = request.inputs.add(name="images", datatype="UINT8", shape=list(array.shape))
        tensor.contents.uint_contents.extend(array.reshape(-1).tolist())
        return request

    reply = stub.ModelInfer(typed_request(), timeout=10)
    out["infer_typed"] = {
        "id": reply.id,
        "shape": list(reply.outputs[0].shape),
        "datatype": reply.outputs[0].datatype,
        "probabilities": np.frombuffer(reply.raw_output_contents[0], dtype="<f4")
        .reshape(2, 10).tolist(),
        "same_as_raw": None,
    }
    raw_reply = stub.ModelInfer(
        service_pb2.ModelInferRequest(
            model_name=model,
            inputs=[service_pb2.ModelInferRequest.InferInputTensor(
                name="images", datatype="UINT8", shape=[2, 32, 32, 3])],
            raw_input_contents=[y.tobytes()],
        ),
        timeout=10,
    )
    out["infer_typed"]["same_as_raw"] = raw_reply.raw_output_contents[0] == reply.raw_output_contents[0]

    # Client mistakes: [code, message] each; the table lives in the pytest side.
    def infer_with(array, datatype="UINT8", name="images", shape=None, model_name=model,
                   version="", outputs=None):
        def call():
            i = tc.InferInput(name, list(shape or array.shape), datatype)
            i.set_data_from_numpy(array)
            client.infer(model_name, [i], model_version=version, outputs=outputs)
        return call

    def raw_bytes(count: int, payload: bytes):
        return service_pb2.ModelInferRequest(
            model_name=model,
            inputs=[service_pb2.ModelInferRequest.InferInputTensor(
                name="images", datatype="UINT8", shape=[count, 32, 32, 3])],
            raw_input_contents=[payload],
        )

    over = typed_request(images(1, seed=3))
    over.inputs[0].contents.uint_contents[0] = 300
    errors = {
        "wrong datatype": error_of(infer_with(x.astype(np.float32), "FP32")),
        "wrong shape": error_of(infer_with(x.reshape(3, 32, 96))),
        "wrong input name": error_of(infer_with(x, name="pixels")),
        "unknown model": error_of(infer_with(x, model_name="no-such-model")),
        "unknown version": error_of(infer_with(x, version="999")),
        "zero images": error_of(infer_with(np.zeros((0, 32, 32, 3), np.uint8))),
        "too many images": error_of(infer_with(images(max_images + 1, seed=4))),
        "unknown output": error_of(infer_with(x, outputs=[tc.InferRequestedOutput("logits")])),
        "missing input": error_of(lambda: client.infer(model, [])),
        "byte length": raw_error(stub, raw_bytes(2, images(1, seed=5).tobytes())),
        "typed over 255": raw_error(stub, over),
        "unknown model metadata": error_of(lambda: client.get_model_metadata("no-such-model")),
        "unknown model config": error_of(lambda: client.get_model_config("no-such-model")),
    }
    out["errors"] = errors

    # Streaming: responses in order, a bad message reported without closing the stream.
    results: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    good = tc.InferInput("images", [1, 32, 32, 3], "UINT8")
    good.set_data_from_numpy(images(1, seed=6))
    bad = tc.InferInput("images", [1, 32, 32, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 32, 32, 3), np.float32))
    for i, tensor in enumerate([good, good, bad, good]):
        client.async_stream_infer(model, [tensor], request_id=f"s{i}")
    stream = []
    for _ in range(4):
        result, error = results.get(timeout=20)
        if error is not None:
            stream.append(["error", error.message()])
        else:
            stream.append(["ok", result.get_response().id])
    client.stop_stream()
    out["stream"] = stream

    out["statistics"] = client.get_inference_statistics(model, as_json=True)
    out["ready_after"] = client.is_server_ready() and client.is_model_ready(model)
    client.close()
    channel.close()
    return out


def main() -> int:
    if sys.argv[1:] == ["--descriptors"]:
        print(json.dumps(descriptors()))
        return 0
    address, model, max_images = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(json.dumps(run(address, model, max_images)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
