"""A tiny ONNX model that honours the model contract, built with onnx.helper (no TensorFlow).

Serving, client and benchmark tests use it so they need neither TensorFlow nor a trained
model: uint8 images -> /255 -> one dense layer -> softmax, with every metadata key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cifar10_core import contract


def build_tiny_model(name: str = "tiny-cnn", version: str = "1", seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    features = contract.IMAGE_SIZE * contract.IMAGE_SIZE * contract.CHANNELS
    weights = rng.normal(0.0, 0.5, size=(features, contract.NUM_CLASSES)).astype(np.float32)
    bias = rng.normal(0.0, 0.1, size=(contract.NUM_CLASSES,)).astype(np.float32)
    initializers = [
        numpy_helper.from_array(np.array(1.0 / 255.0, dtype=np.float32), "scale"),
        numpy_helper.from_array(np.array([-1, features], dtype=np.int64), "flat_shape"),
        numpy_helper.from_array(weights, "weights"),
        numpy_helper.from_array(bias, "bias"),
    ]
    nodes = [
        helper.make_node("Cast", [contract.INPUT_NAME], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["as_float", "scale"], ["scaled"]),
        helper.make_node("Reshape", ["scaled", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "weights"], ["logits_nobias"]),
        helper.make_node("Add", ["logits_nobias", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [contract.OUTPUT_NAME], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(contract.INPUT_NAME, TensorProto.UINT8, ["N", 32, 32, 3])],
        [helper.make_tensor_value_info(contract.OUTPUT_NAME, TensorProto.FLOAT, ["N", 10])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    metadata = {
        contract.META_CLASS_NAMES: json.dumps(list(contract.CLASS_NAMES)),
        contract.META_MODEL_NAME: name,
        contract.META_MODEL_VERSION: version,
        contract.META_TRAINING_CONFIG: json.dumps({"synthetic": True, "seed": seed}),
        contract.META_DATASET: "synthetic (tests/tiny_model.py)",
        contract.META_DATASET_FINGERPRINT: "none",
        contract.META_VALIDATION_METRICS: json.dumps({"val_accuracy": None}),
    }
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    return model


def write_tiny_model(path: str | os.PathLike, **kwargs) -> Path:
    """Write the tiny model atomically to ``path`` and return it."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(build_tiny_model(**kwargs), tmp)
    os.replace(tmp, path)
    return path
