"""Export a trained Keras model to ONNX per the model contract, checked and written atomically.

The exported graph takes ``images`` uint8 [N, 32, 32, 3] and scales them to [0, 1] itself
(with ``tta``, it averages the network over several views of each image), then returns
``probabilities`` float32 [N, 10]; ``metadata_props`` carry the class names, model name and
version, training config, data set, its fingerprint and validation metrics, and the
architecture, recipe and test-time augmentation.
Before the file is written, onnxruntime must agree with Keras on real images
(max |delta p| <= PARITY_TOLERANCE, identical argmax), else ExportParityError; and the
written file must pass the checks the server makes at load (``check_model_file``), else
ModelLoadError and nothing replaces the output.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cifar10_core import contract
from cifar10_core.errors import ModelLoadError
from cifar10_training import tta as tta_module

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-5
OPSET = 17
# Metadata entries beside the contract's: which network, recipe and test-time augmentation.
META_ARCHITECTURE = "architecture"
META_RECIPE = "recipe"
META_TTA = "test_time_augmentation"


class ExportParityError(Exception):
    """onnxruntime and Keras disagree on the exported model: nothing was written."""


def to_onnx(model, tta: str = "none"):
    """The Keras model wrapped with uint8 -> [0, 1] scaling (and test-time augmentation,
    ``cifar10_training.tta``), as an ONNX ModelProto."""
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((None, *contract.INPUT_SHAPE), tf.uint8, name=contract.INPUT_NAME),)

    @tf.function(input_signature=spec)
    def serve(images):
        return {contract.OUTPUT_NAME: tta_module.probabilities(model, tf.cast(images, tf.float32) / 255.0, tta)}

    model_proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=OPSET)
    return model_proto


def check_parity(model, model_proto, images: np.ndarray, tta: str = "none") -> dict:
    """Compare Keras (with the same test-time augmentation) and onnxruntime on ``images``;
    raise ExportParityError on mismatch."""
    import onnxruntime as ort

    session = ort.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != [contract.INPUT_NAME] or outputs != [contract.OUTPUT_NAME]:
        raise ExportParityError(f"exported graph has inputs {inputs} and outputs {outputs}")
    batch = tta_module.PREDICT_BATCH
    onnx_p = np.concatenate([session.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: images[i:i + batch]})[0]
                             for i in range(0, len(images), batch)])
    keras_p = tta_module.predict(model, images, tta)
    max_delta = float(np.max(np.abs(onnx_p - keras_p)))
    argmax_mismatches = int(np.sum(onnx_p.argmax(1) != keras_p.argmax(1)))
    report = {"images": len(images), "max_abs_delta": max_delta, "argmax_mismatches": argmax_mismatches}
    if max_delta > PARITY_TOLERANCE or argmax_mismatches:
        raise ExportParityError(
            f"ONNX export disagrees with Keras on {len(images)} images: max |delta p| = "
            f"{max_delta:.2e} (limit {PARITY_TOLERANCE:.0e}), {argmax_mismatches} argmax mismatches"
        )
    return report


def build_metadata(config: dict, version: str, dataset: str, fingerprint: str, metrics: dict,
                   extra: dict[str, str] | None = None) -> dict[str, str]:
    """The contract's metadata entries, plus ``extra`` ones (e.g. the optional test figures)."""
    return {
        contract.META_CLASS_NAMES: json.dumps(list(contract.CLASS_NAMES)),
        contract.META_MODEL_NAME: config["model_name"],
        contract.META_MODEL_VERSION: version,
        contract.META_TRAINING_CONFIG: json.dumps(config, sort_keys=True),
        contract.META_DATASET: dataset,
        contract.META_DATASET_FINGERPRINT: fingerprint,
        contract.META_VALIDATION_METRICS: json.dumps(metrics, sort_keys=True),
        contract.META_CREATED: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }


def set_metadata(model_proto, metadata: dict[str, str]) -> None:
    """Replace the ONNX model's ``metadata_props`` with ``metadata``."""
    del model_proto.metadata_props[:]
    for key, value in metadata.items():
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value


def next_version(model_dir: Path) -> Path:
    """``<model_dir>/<N + 1>/model.onnx``: where the next version of a model of a model
    repository goes (N: its highest version folder, 0 for none). A serving server sees the
    version once its ``model.onnx`` is renamed in (``write_model_atomically``), not before."""
    versions = [int(p.name) for p in model_dir.glob("*")
                if p.is_dir() and p.name.isascii() and p.name.isdigit()] if model_dir.is_dir() else []
    return model_dir / str(max(versions, default=0) + 1) / "model.onnx"


def write_model_atomically(data: bytes, output: Path,
                           check: Callable[[Path], object] | None = None) -> None:
    """Write ``data`` to a temporary file beside ``output``, run ``check`` on that file (it
    raises to refuse it), then rename it over ``output``: a server watching ``output`` sees
    the old file or the new one, never half of one, and a refused file never lands. A link
    (``models/cifar10-cnn.onnx``, to a repository's version) is followed: the file it names
    is replaced and the link stays."""
    if output.is_symlink():
        output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        if check is not None:
            check(tmp)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)


def check_model_file(path: Path) -> None:
    """Refuse (ModelLoadError) a written model that the server would refuse: the contract's
    signature and metadata (``contract.check``) and test runs answering probabilities
    (``contract.check_answers``), through onnxruntime as the server runs it."""
    import onnxruntime as ort

    source = str(path)
    try:
        session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for a bad file
        raise ModelLoadError(f"onnxruntime cannot load {source}: {exc}") from None
    meta = dict(session.get_modelmeta().custom_metadata_map)
    contract.check(source, session.get_inputs(), session.get_outputs(), meta)
    contract.check_answers(
        lambda images: session.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: images})[0], source
    )


def export(model, output: Path, metadata: dict[str, str], parity_images: np.ndarray, tta: str = "none") -> dict:
    """Convert (with test-time augmentation ``tta`` inside the graph), check parity, attach
    metadata and write ``output`` atomically.

    Returns the parity report. A reader of ``output`` sees the old file or the new one,
    never half of one.
    """
    import onnx

    model_proto = to_onnx(model, tta)
    parity = check_parity(model, model_proto, parity_images, tta)
    set_metadata(model_proto, metadata)
    onnx.checker.check_model(model_proto)
    write_model_atomically(model_proto.SerializeToString(), output, check=check_model_file)
    log.info("exported %s (parity on %d images: max |delta p| %.1e)", output, parity["images"], parity["max_abs_delta"])
    return parity
