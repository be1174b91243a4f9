"""The model contract: what every ONNX file handed from training to serving carries.

Training writes it (``cifar10_training.export``), serving checks it (``cifar10_serving.onnx_model``).
Kept free of heavy imports (numpy only) so both sides, and the clients, can share it. Besides
the names and shapes: ``check`` (a graph signature and metadata against the contract, for
serving's loader and training's writers alike) and ``check_answers`` (test runs whose rows
must be probabilities).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np

from cifar10_core.errors import ModelLoadError, NonFiniteOutputError

INPUT_NAME = "images"
"""uint8 [N, 32, 32, 3], RGB, NHWC; scaling to [0, 1] happens inside the graph."""

OUTPUT_NAME = "probabilities"
"""float32 [N, 10], rows sum to 1, in the order of CLASS_NAMES."""

IMAGE_SIZE = 32
CHANNELS = 3
INPUT_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, CHANNELS)

CLASS_NAMES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
NUM_CLASSES = len(CLASS_NAMES)

# Keys of the ONNX model's metadata_props. Values are strings; *_json values are JSON.
META_CLASS_NAMES = "class_names_json"
META_MODEL_NAME = "model_name"
META_MODEL_VERSION = "model_version"
META_TRAINING_CONFIG = "training_config_json"
META_DATASET = "dataset"
META_DATASET_FINGERPRINT = "dataset_fingerprint"
META_VALIDATION_METRICS = "validation_metrics_json"
META_CREATED = "created_utc"
# Optional (models made before the three-way split lack them):
META_TEST_METRICS = "test_metrics_json"
"""Figures on the test part: images held out from training and from every choice."""
META_SPLIT = "split_json"
"""Seed and sizes of the training, validation and test parts (indices: recomputed from them)."""

REQUIRED_METADATA = (
    META_CLASS_NAMES,
    META_MODEL_NAME,
    META_MODEL_VERSION,
    META_TRAINING_CONFIG,
    META_DATASET,
    META_DATASET_FINGERPRINT,
    META_VALIDATION_METRICS,
)

ROW_SUM_TOLERANCE = 1e-3
"""How far from 1 a row of ``probabilities`` may sum. float32 softmax rows do within ~1e-6;
a model answering logits, or a quantized softmax (1/255 steps: off by up to ~0.01), is refused."""

CHECK_BATCH_SIZES = (1, 8)
"""Batch sizes of the test runs in ``check_answers`` unless the caller names others."""


class TensorArg(Protocol):
    """A graph input or output as onnxruntime describes it (``NodeArg``)."""

    name: str
    type: str  # "tensor(uint8)", "tensor(float)", ...
    shape: Sequence  # ints for static dims, str or None for symbolic ones


def _dim_ok(dim, expected: int | None) -> bool:
    """A static dim must equal ``expected``; None means 'the batch dim: anything symbolic'."""
    if expected is None:
        return not isinstance(dim, int) or dim in (-1, 0)
    return dim == expected


def _tensor_problems(kind: str, spec: TensorArg, dtype: str, shape: tuple[int, ...]) -> list[str]:
    problems = []
    if spec.type != f"tensor({dtype})":
        problems.append(f"{kind} {spec.name!r} must be tensor({dtype}), is {spec.type}")
    dims = list(spec.shape)
    expected = [None, *shape]
    if len(dims) != len(expected) or not all(_dim_ok(d, e) for d, e in zip(dims, expected)):
        shown = ", ".join(["N", *map(str, shape)])
        problems.append(f"{kind} {spec.name!r} must have shape [{shown}], has {dims}")
    return problems


def _metadata_problems(metadata: Mapping[str, str]) -> list[str]:
    problems = []
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        problems.append(f"metadata keys missing: {', '.join(missing)}")
    if META_CLASS_NAMES in metadata:
        try:
            labels = tuple(json.loads(metadata[META_CLASS_NAMES]))
        except (ValueError, TypeError):
            problems.append(f"metadata {META_CLASS_NAMES} is not a JSON list")
        else:
            if labels != CLASS_NAMES:
                problems.append(
                    f"metadata {META_CLASS_NAMES} must be {list(CLASS_NAMES)}, is {list(labels)}"
                )
    for key in (META_MODEL_NAME, META_MODEL_VERSION):
        if key in metadata and not metadata[key].strip():
            problems.append(f"metadata {key} is empty")
    return problems


def problems(inputs: Sequence[TensorArg], outputs: Sequence[TensorArg],
             metadata: Mapping[str, str]) -> list[str]:
    """Every way a model's graph signature and metadata break the contract (empty: none)."""
    found: list[str] = []
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        found.append(f"needs exactly one input named {INPUT_NAME!r}, has {[i.name for i in inputs]}")
    else:
        found += _tensor_problems("input", inputs[0], "uint8", INPUT_SHAPE)
    names = [o.name for o in outputs]
    if OUTPUT_NAME not in names:
        found.append(f"needs an output named {OUTPUT_NAME!r}, has {names}")
    else:
        found += _tensor_problems("output", outputs[names.index(OUTPUT_NAME)], "float", (NUM_CLASSES,))
    return found + _metadata_problems(metadata)


def check(source: str, inputs: Sequence[TensorArg], outputs: Sequence[TensorArg],
          metadata: Mapping[str, str]) -> None:
    """Raise ModelLoadError listing every problem if the model ``source`` breaks the contract."""
    found = problems(inputs, outputs, metadata)
    if found:
        raise ModelLoadError(f"model {source} breaks the model contract: " + "; ".join(found))


def probabilities_problem(out: np.ndarray, rows: int) -> str | None:
    """Why ``out`` is not the contract's answer for ``rows`` images (None: it is)."""
    if out.shape != (rows, NUM_CLASSES):
        return f"output shape {out.shape} for a batch of {rows}, expected {(rows, NUM_CLASSES)}"
    sums = out.sum(axis=1, dtype=np.float64)
    if not np.isfinite(sums).all():
        return f"{OUTPUT_NAME} holds non-finite values"
    off = np.abs(sums - 1.0)
    if off.max() > ROW_SUM_TOLERANCE:
        return (
            f"{OUTPUT_NAME} rows sum to {float(sums[off.argmax()]):.4g}, not 1 (within "
            f"{ROW_SUM_TOLERANCE:g}): not probabilities (softmax missing, or quantized?)"
        )
    return None


def _check_images(n: int) -> np.ndarray:
    """``n`` images of fixed pixel noise (a multiplicative hash of the pixel index): no
    ``numpy.random``, whose import would add to every server's cold start."""
    index = np.arange(n * int(np.prod(INPUT_SHAPE)), dtype=np.uint64)
    return ((index * 2654435761) >> 16).astype(np.uint8).reshape(n, *INPUT_SHAPE)


def check_answers(predict: Callable[[np.ndarray], np.ndarray], source: str,
                  batch_sizes: Sequence[int] = CHECK_BATCH_SIZES) -> None:
    """Run ``predict`` on fixed pseudo-random images of each batch size; ModelLoadError
    unless every answer is a batch of probabilities (``probabilities_problem``)."""
    for n in batch_sizes:
        images = _check_images(n)
        try:
            out = predict(images)
        except Exception as exc:
            raise ModelLoadError(f"model {source}: a test run failed: {exc}") from None
        problem = probabilities_problem(np.asarray(out), n)
        if problem is not None:
            raise ModelLoadError(f"model {source}: {problem}")


def model_identity(metadata: Mapping[str, str]) -> tuple[str, str]:
    """(name, version) of a model whose metadata ``check`` accepted."""
    return metadata[META_MODEL_NAME].strip(), metadata[META_MODEL_VERSION].strip()


def finite_probabilities(out: np.ndarray, model_name: str) -> np.ndarray:
    """A run's output as float32; NonFiniteOutputError if it holds NaN or infinity (never
    returned to anyone). One reduction instead of ``np.isfinite(...).all()``: the sum is NaN
    if any element is NaN or infinite (inf + -inf = NaN), for a fraction of a microsecond."""
    if out.dtype != np.float32:
        out = out.astype(np.float32)
    if not np.isfinite(out.sum()):
        raise NonFiniteOutputError(f"model {model_name} produced non-finite probabilities; not returned")
    return out


def read_model(path: str) -> tuple[bytes, os.stat_result]:
    """An ONNX file's bytes and its ``os.stat_result``, read through one file descriptor (so
    both belong to the same file, even if it is replaced meanwhile). ModelLoadError, in one
    line, for a missing, unreadable or empty file, or a directory."""
    try:
        with open(path, "rb") as f:
            stat = os.fstat(f.fileno())
            data = f.read()
    except FileNotFoundError:
        raise ModelLoadError(f"model file not found: {path}") from None
    except IsADirectoryError:
        raise ModelLoadError(f"model path is a directory, not an ONNX file: {path}") from None
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    if not data:
        raise ModelLoadError(f"model file is empty: {path}")
    return data, stat
