"""Drive our Open Inference Protocol REST API with Triton's own client (tritonclient.http);
print JSON results.

Runs in the separate Triton-client venv (``.venv-triton``, see bench/setup_triton_env.sh),
never in the project's process; imports nothing from this repository.

    python tests/http/triton_http_checks.py HOST:PORT MODEL_NAME PNG_FILE...

The pytest side (tests/http/test_triton_http_client.py) asserts on the JSON.
"""

from __future__ import annotations

import base64
import json
import sys

import numpy as np


def images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


def run(address: str, model: str, pngs: list[bytes]) -> dict:
    import tritonclient.http as tc
    from tritonclient.utils import InferenceServerException

    client = tc.InferenceServerClient(address)
    out: dict = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "model_ready_v1": client.is_model_ready(model, "1"),
        "model_ready_unknown": client.is_model_ready("no-such-model"),
        "server_metadata": client.get_server_metadata(),
        "model_metadata": client.get_model_metadata(model),
        "model_config": client.get_model_config(model),
    }

    x = images(3, seed=1)

    def pixels(binary: bool):
        tensor = tc.InferInput("images", list(x.shape), "UINT8")
        tensor.set_data_from_numpy(x, binary_data=binary)
        return tensor

    # What tritonclient sends by default: binary input, binary_data_output.
    result = client.infer(model, [pixels(True)], request_id="req-1")
    response = result.get_response()
    out["infer_binary"] = {"probabilities": result.as_numpy("probabilities").tolist(),
                           "output": response["outputs"][0], "id": response.get("id"),
                           "model_name": response["model_name"],
                           "model_version": response["model_version"]}
    result = client.infer(model, [pixels(False)], model_version="1",
                          outputs=[tc.InferRequestedOutput("probabilities", binary_data=False)])
    out["infer_json"] = {"probabilities": result.as_numpy("probabilities").tolist(),
                         "output": {k: v for k, v in result.get_response()["outputs"][0].items()
                                    if k != "data"}}

    out["classification"] = {}
    for binary in (True, False):
        top = tc.InferRequestedOutput("probabilities", binary_data=binary, class_count=3)
        strings = client.infer(model, [pixels(binary)], outputs=[top]).as_numpy("probabilities")
        out["classification"][str(binary)] = [
            [s.decode() if isinstance(s, bytes) else s for s in row] for row in strings]

    # Encoded images: raw file bytes as binary data, base64 text in JSON.
    out["encoded"] = {}
    for binary in (True, False):
        elements = pngs if binary else [base64.b64encode(p) for p in pngs]
        tensor = tc.InferInput("images", [len(pngs)], "BYTES")
        tensor.set_data_from_numpy(np.array(elements, dtype=np.object_), binary_data=binary)
        out["encoded"][str(binary)] = client.infer(model, [tensor]).as_numpy("probabilities").tolist()

    def error_of(call) -> list | None:
        try:
            call()
        except InferenceServerException as exc:
            return [exc.status(), exc.message()]
        return None

    wrong = tc.InferInput("images", [3, 32, 96], "UINT8")
    wrong.set_data_from_numpy(x.reshape(3, 32, 96))
    out["errors"] = {
        "unknown model": error_of(lambda: client.infer("no-such-model", [pixels(True)])),
        "unknown version": error_of(lambda: client.infer(model, [pixels(True)], model_version="9")),
        "wrong shape": error_of(lambda: client.infer(model, [wrong])),
        "unknown model metadata": error_of(lambda: client.get_model_metadata("no-such-model")),
    }
    out["statistics"] = client.get_inference_statistics(model)
    out["all_statistics"] = client.get_inference_statistics()
    client.close()
    return out


def main() -> int:
    address, model, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
    pngs = []
    for path in paths:
        with open(path, "rb") as f:
            pngs.append(f.read())
    print(json.dumps(run(address, model, pngs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
