"""What the Open Inference Protocol tells about the server and the served model, as JSON
values in Triton's REST form (the gRPC door parses the same values into its messages):

* server metadata: name, version and the extensions announced (``extensions``);
* model metadata: the model's name and the versions served (the one named, if one is),
  platform ``onnxruntime_onnx``, the input as ``UINT8 [-1, 32, 32, 3]`` (the form
  ``perf_analyzer`` and most clients send; ``BYTES`` encoded images are accepted too) and
  the output ``FP32 [-1, 10]``;
* model configuration (Triton's extension): max_batch_size = the most images one request
  may carry, dynamic batching with the batcher's queue delay, the instances as CPU
  instances.
"""

from __future__ import annotations

import cifar10_serving
from cifar10_core import contract
from cifar10_serving.dataplane.plane import Batching, Limits
from cifar10_serving.inference_protocol.tensors import (
    INPUT_DATATYPE,
    INPUT_SHAPE,
    OUTPUT_DATATYPE,
    OUTPUT_SHAPE,
)
from cifar10_serving.onnx_model import ModelInfo

SERVER_NAME = "cifar10-serving"
PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"
EXTENSIONS = ("classification", "model_configuration", "binary_tensor_data")
STATISTICS_EXTENSION = "statistics"
REPOSITORY_EXTENSION = "model_repository"  # --model-control explicit


def extensions(model_version: str, repository: bool = False) -> list[str]:
    """The extensions server metadata announces, serving a model of ``model_version``
    (``repository``: with Triton's repository extension).

    ``statistics`` only while the model version is a plain integer: perf_analyzer reads
    the statistics whenever the extension is announced and parses the version as an
    integer (a version like ``2026.11.28-0413`` would make it fail); the statistics
    themselves are always answered. ``binary_tensor_data`` is the REST door's.
    """
    names = list(EXTENSIONS)
    if model_version.isdigit():
        names.append(STATISTICS_EXTENSION)
    if repository:
        names.append(REPOSITORY_EXTENSION)
    return names


def server_metadata(model_version: str, repository: bool = False) -> dict:
    return {"name": SERVER_NAME, "version": cifar10_serving.__version__,
            "extensions": extensions(model_version, repository)}


def model_metadata(info: ModelInfo, versions: list[str] | None = None) -> dict:
    """``info``'s metadata; ``versions``: those served of its model (default: its own)."""
    return {
        "name": info.name,
        "versions": versions or [info.version],
        "platform": PLATFORM,
        "inputs": [{"name": contract.INPUT_NAME, "datatype": INPUT_DATATYPE,
                    "shape": list(INPUT_SHAPE)}],
        "outputs": [{"name": contract.OUTPUT_NAME, "datatype": OUTPUT_DATATYPE,
                     "shape": list(OUTPUT_SHAPE)}],
    }


def model_config(info: ModelInfo, limits: Limits, batching: Batching) -> dict:
    """Triton's model configuration, the fields of it that clients and perf_analyzer read."""
    return {
        "name": info.name,
        "platform": PLATFORM,
        "backend": BACKEND,
        "max_batch_size": limits.max_images_per_request,
        "input": [{"name": contract.INPUT_NAME, "data_type": "TYPE_UINT8",
                   "format": "FORMAT_NHWC", "dims": list(contract.INPUT_SHAPE)}],
        "output": [{"name": contract.OUTPUT_NAME, "data_type": "TYPE_FP32",
                    "dims": [contract.NUM_CLASSES]}],
        "dynamic_batching": {
            "max_queue_delay_microseconds": round(batching.max_queue_delay_s * 1_000_000)},
        "instance_group": [{"name": f"{info.name}_cpu", "count": batching.instances,
                            "kind": "KIND_CPU"}],
        "model_transaction_policy": {"decoupled": False},
    }
