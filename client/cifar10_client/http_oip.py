"""The Open Inference Protocol's REST API (KServe v2) as the HTTP client uses it: pixels out
as a ``UINT8 [N, 32, 32, 3]`` tensor with the binary tensor data extension (a JSON header,
then the raw bytes; ``Inference-Header-Content-Length`` says where the header ends), the
``FP32 [N, 10]`` probabilities back the same way (or as JSON ``data``), and the model's
metadata."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import grpc
import numpy as np

from cifar10_core import contract

from .errors import ClientError
from .results import Classification, ModelInfo, TensorInfo, accuracy_of

HEADER_LENGTH = "Inference-Header-Content-Length"
LIVE_PATH = "/v2/health/live"
READY_PATH = "/v2/health/ready"

# The protocol's float datatypes by numpy's names, which the cifar10.v2 API uses (the others
# are the same names in lower case: UINT8, uint8).
_FLOATS = {"FP16": "float16", "FP32": "float32", "FP64": "float64", "BF16": "bfloat16"}


def model_path(model_name: str, model_version: str = "") -> str:
    """``/v2/models/{name}[/versions/{version}]``."""
    path = f"/v2/models/{quote(model_name, safe='')}"
    return path + (f"/versions/{quote(model_version, safe='')}" if model_version else "")


def infer_request(pixels: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """The body and headers of an infer request for uint8 ``pixels`` [N, 32, 32, 3], the
    probabilities asked for as binary data."""
    data = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    header = json.dumps({
        "inputs": [{"name": contract.INPUT_NAME, "datatype": "UINT8", "shape": list(pixels.shape),
                    "parameters": {"binary_data_size": len(data)}}],
        "outputs": [{"name": contract.OUTPUT_NAME, "parameters": {"binary_data": True}}],
    }, separators=(",", ":")).encode()
    return header + data, {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}


def _malformed(message: str) -> ClientError:
    return ClientError(grpc.StatusCode.INTERNAL, f"malformed response: {message}", attempts=1)


def probabilities(body: bytes, header_length: str | None, count: int) -> tuple[np.ndarray, str, str]:
    """``(float32 [count, 10], model name, model version)`` from an infer answer, its output
    in binary (after a JSON header of ``header_length`` bytes) or as JSON ``data``."""
    try:
        length = int(header_length) if header_length is not None else len(body)
        answer = json.loads(body[:length])
        output = next(o for o in answer["outputs"] if o["name"] == contract.OUTPUT_NAME)
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            values = np.frombuffer(body[length:length + int(size)], dtype="<f4")
        else:
            values = np.asarray(output["data"], dtype=np.float32)
        name, version = str(answer.get("model_name", "")), str(answer.get("model_version", ""))
    except (ValueError, KeyError, TypeError, StopIteration) as exc:
        raise _malformed(f"not an inference answer with {contract.OUTPUT_NAME!r} ({exc!r})") from None
    if values.size != count * contract.NUM_CLASSES:
        raise _malformed(f"{values.size} probabilities for {count} images of {contract.NUM_CLASSES} classes")
    return values.reshape(count, contract.NUM_CLASSES), name, version


def classifications(rows: np.ndarray, top_k: int, name: str, version: str) -> list[Classification]:
    """One Classification per row; the labels are the contract's, every served model's."""
    return [Classification.from_probabilities(row, contract.CLASS_NAMES, top_k, name, version) for row in rows]


def model_info(metadata: Any, labels: tuple[str, ...]) -> ModelInfo:
    """The ModelInfo of a model metadata answer (the model's own metadata in its
    ``parameters``) and the model's ``labels``."""
    try:
        def tensor(entry: dict) -> TensorInfo:
            datatype = str(entry["datatype"])
            return TensorInfo(str(entry["name"]), _FLOATS.get(datatype, datatype.lower()),
                              tuple(int(d) for d in entry["shape"]))

        parameters = {str(key): str(value) for key, value in (metadata.get("parameters") or {}).items()}
        return ModelInfo(
            name=str(metadata["name"]), version=str((metadata.get("versions") or [""])[0]), labels=labels,
            input=tensor(metadata["inputs"][0]), output=tensor(metadata["outputs"][0]), max_batch_size=0,
            metadata=parameters, accuracy=accuracy_of(parameters))
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise _malformed(f"model metadata: {exc!r}") from None
