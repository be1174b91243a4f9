"""Export a trained Keras model to ONNX per the model contract, checked and written atomically.

The exported graph takes ``images`` uint8 [N, 32, 32, 3] and scales them to [0, 1] itself,
then returns ``probabilities`` float32 [N, 10]; ``metadata_props`` carry the class names,
model name and version, training config, data set, its fingerprint and validation metrics.
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

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-5
OPSET = 17


class ExportParityError(Exception):
    """onnxruntime and Keras disagree on the exported model: nothing was written."""


def to_onnx(model):
    """The Keras model wrapped with uint8 -> [0, 1] scaling, as an ONNX ModelProto."""
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((None, *contract.INPUT_SHAPE), tf.uint8, name=contract.INPUT_NAME),)

    @tf.function(input_signature=spec)
    def serve(images):
        return {contract.OUTPUT_NAME: model(tf.cast(images, tf.float32) / 255.0, training=False)}

    model_proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=OPSET)
    return model_proto


def check_parity(model, model_proto, images: np.ndarray) -> dict:
    """Compare Keras and onnxruntime on ``images``; raise ExportParityError on mismatch."""
    import onnxruntime as ort

    session = ort.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != [contract.INPUT_NAME] or outputs != [contract.OUTPUT_NAME]:
        raise ExportParityError(f"exported graph has inputs {inputs} and outputs {outputs}")
    onnx_p = session.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: images})[0]
    keras_p = np.asarray(model(images.astype(np.float32) / 255.0, training=False))
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


def write_model_atomically(data: bytes, output: Path,
                           check: Callable[[Path], object] | None = None) -> None:
    """Write ``data`` to a temporary file beside ``output``, run ``check`` on that file (it
    raises to refuse it), then rename it over ``output``: a server watching ``output`` sees
    the old file or the new one, never half of one, and a refused file never lands."""
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


def export(model, output: Path, metadata: dict[str, str], parity_images: np.ndarray) -> dict:
    """Convert, check parity, attach metadata and write ``output`` atomically.

    Returns the parity report. A reader of ``output`` sees the old file or the new one,
    never half of one.
    """
    import onnx

    model_proto = to_onnx(model)
    parity = check_parity(model, model_proto, parity_images)
    set_metadata(model_proto, metadata)
    onnx.checker.check_model(model_proto)
    write_model_atomically(model_proto.SerializeToString(), output, check=check_model_file)
    log.info("exported %s (parity on %d images: max |delta p| %.1e)", output, parity["images"], parity["max_abs_delta"])
    return parity
