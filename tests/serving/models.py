"""Broken variants of the tiny model, for contract and reload tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cifar10_core import contract
from tests.tiny_model import build_tiny_model


def _save(model: onnx.ModelProto, path) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(model, tmp)
    os.replace(tmp, path)
    return path


def _set_meta(model: onnx.ModelProto, key: str, value: str | None) -> None:
    props = [p for p in model.metadata_props if p.key != key]
    del model.metadata_props[:]
    for p in props:
        model.metadata_props.add(key=p.key, value=p.value)
    if value is not None:
        model.metadata_props.add(key=key, value=value)


def missing_metadata(path, key=contract.META_DATASET) -> Path:
    model = build_tiny_model()
    _set_meta(model, key, None)
    return _save(model, path)


def wrong_labels(path) -> Path:
    model = build_tiny_model()
    _set_meta(model, contract.META_CLASS_NAMES, json.dumps(list(reversed(contract.CLASS_NAMES))))
    return _save(model, path)


def float_input(path) -> Path:
    model = build_tiny_model()
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT
    return _save(model, path)


def renamed_output(path) -> Path:
    model = build_tiny_model()
    model.graph.node[-1].output[0] = "scores"
    model.graph.output[0].name = "scores"
    return _save(model, path)


def wrong_input_shape(path) -> Path:
    model = build_tiny_model()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[1].dim_value, dims[2].dim_value = 64, 16  # same pixel count, wrong shape
    return _save(model, path)


def nan_output(path) -> Path:
    """Honours the contract on paper but answers NaN (bias NaN)."""
    model = build_tiny_model()
    for i, init in enumerate(model.graph.initializer):
        if init.name == "bias":
            nan = np.full(contract.NUM_CLASSES, np.nan, dtype=np.float32)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(nan, "bias"))
    return _save(model, path)


def no_softmax(path) -> Path:
    """Answers logits, not probabilities: the softmax replaced by Identity."""
    model = build_tiny_model()
    last = model.graph.node[-1]
    assert last.op_type == "Softmax"
    model.graph.node[-1].CopyFrom(helper.make_node("Identity", list(last.input), list(last.output)))
    return _save(model, path)


def garbage(path) -> Path:
    Path(path).write_bytes(b"this is not an onnx model\x00\x01\x02" * 10)
    return Path(path)


def version(path, version: str, name: str = "tiny-cnn", seed: int = 0) -> Path:
    return _save(build_tiny_model(name=name, version=version, seed=seed), path)


__all__ = ["helper", "missing_metadata", "wrong_labels", "float_input", "renamed_output",
           "wrong_input_shape", "nan_output", "no_softmax", "garbage", "version"]


def model_runs(srv) -> tuple[int, int]:
    """(model runs, images in them) of a BackgroundServer so far, from its batch-size metric."""
    runs = images = 0
    for metric in srv.metrics.batch_size.collect():  # every model version's series
        for sample in metric.samples:
            if sample.name == "cifar10_batch_size_count":
                runs += int(sample.value)
            elif sample.name == "cifar10_batch_size_sum":
                images += int(sample.value)
    return runs, images
