"""INT8 copy of an exported model: onnxruntime's static quantization, checked and measured.

    cifar10-train quantize --model models/cifar10-cnn.onnx \
        --data DATA --output models/cifar10-cnn-int8.onnx

``DATA`` is the data the model was trained on (for the bundled model: the image folder of
the 50,000 JPEG-encoded training images its card names; the fingerprint is checked).

Reads top to bottom:

1. The data set the model was trained on (its fingerprint must match the model's
   metadata) and the model's own split, recomputed from that metadata.
2. Calibration images: a seeded sample of the *training* part of the split, never a
   validation or test image, so the figures below stay honest.
3. ``onnxruntime.quantization.quantize_static``: QDQ format, per-channel int8 weights (7-bit
   range by default, see ``quantize_bytes``), uint8 activations, percentile calibration (the
   99.999th percentile of each activation), convolutions, pooling and dense layers only. The uint8 input, the /255 scaling inside the graph and the float32
   softmax stay as they are: the file still honours the model contract.
4. Both models evaluated on the validation part (and the test part, for models that have
   one) through onnxruntime; the INT8 file gets the FP32 file's metadata with its own
   version (``<version>-int8``), its own validation and test metrics and a
   ``quantization_json`` entry (method, calibration, both accuracies, agreement with
   FP32), and passes the checks the server makes at load
   (``export.check_model_file``: the core's contract check and rows that are probabilities)
   before it is written, atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from cifar10_core import contract
from cifar10_training import data as data_module
from cifar10_training import evaluate, export
from cifar10_training.train import cpu_model

log = logging.getLogger(__name__)

META_QUANTIZATION = "quantization_json"
DEFAULT_CALIBRATION_IMAGES = 512
QUANTIZED_OPS = ["Conv", "MaxPool", "Relu", "Gemm", "MatMul"]


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol: one ``{input: batch}`` per call."""

    def __init__(self, images: np.ndarray, batch_size: int = 32):
        self._batches = iter([images[i:i + batch_size] for i in range(0, len(images), batch_size)])

    def get_next(self) -> dict | None:
        batch = next(self._batches, None)
        return None if batch is None else {contract.INPUT_NAME: batch}


def calibration_indices(labels: np.ndarray, held_out: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` seeded indices of images outside ``held_out`` (sorted)."""
    pool = np.setdiff1d(np.arange(len(labels)), held_out)
    if count < 1 or count > len(pool):
        raise data_module.DataError(
            f"calibration needs between 1 and {len(pool)} training images, asked for {count}")
    return np.sort(np.random.default_rng(seed).choice(pool, size=count, replace=False))


def quantize_bytes(model_path: Path, calibration: np.ndarray, reduce_range: bool = True) -> bytes:
    """The INT8 QDQ model (without metadata) as bytes.

    ``reduce_range`` keeps weights to 7 bits, as onnxruntime advises for x86 CPUs without
    VNNI: their uint8 x int8 kernels can saturate with full-range per-channel weights. On
    this project's AVX2 hosts full range agreed with FP32 on 91 % of the validation images
    (-0.56 points), 7-bit on 97 % (no loss). Full range suits only CPUs with VNNI.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared, quantized = os.path.join(tmp, "prepared.onnx"), os.path.join(tmp, "int8.onnx")
        # Shape inference and graph clean-up first, as onnxruntime recommends; its symbolic
        # shape inference needs sympy and adds nothing for a graph with static shapes.
        quant_pre_process(str(model_path), prepared, skip_symbolic_shape=True)
        quantize_static(
            prepared, quantized, _Calibration(calibration),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=reduce_range,
            # 99.999th percentile of each activation. With 7-bit weights MinMax, Entropy and
            # Percentile did alike on the seed CNN (96.7-96.8 % agreement with FP32).
            calibrate_method=CalibrationMethod.Percentile,
            # Not Softmax: its output is the contract's probabilities; a quantized one has
            # 1/255 steps and rows that sum to 1 only within about 0.01.
            op_types_to_quantize=QUANTIZED_OPS,
        )
        return Path(quantized).read_bytes()


def quantize(model_path: Path, source: str, output: Path,
             calibration_images: int = DEFAULT_CALIBRATION_IMAGES, seed: int = 0,
             reduce_range: bool = True) -> dict:
    """Write the INT8 copy of ``model_path`` to ``output``; returns its quantization record."""
    import onnx
    import onnxruntime

    from cifar10_training.run import split_of

    started = time.perf_counter()
    dataset = data_module.load(source)
    split = split_of(model_path, dataset)
    validation = split.val
    chosen = calibration_indices(dataset.labels, np.concatenate([split.val, split.test]), calibration_images, seed)
    log.info("quantizing %s with %d calibration images (seed %d) from the training part of %s",
             model_path, len(chosen), seed, dataset.source)
    quantized = quantize_bytes(model_path, dataset.images[chosen], reduce_range)

    images, labels = dataset.images[validation], dataset.labels[validation]
    fp32_probs = evaluate.predict_onnx(model_path, images)
    int8_probs = evaluate.predict_onnx(quantized, images)
    fp32, int8 = evaluate.score(fp32_probs, labels), evaluate.score(int8_probs, labels)

    same, top1 = fp32_probs.argmax(1) == int8_probs.argmax(1), fp32_probs.max(1)
    source_model = onnx.load(str(model_path), load_external_data=False)
    meta = {p.key: p.value for p in source_model.metadata_props}
    record = {
        "method": "onnxruntime static quantization, QDQ, per-channel int8 weights"
                  f"{' (7-bit range)' if reduce_range else ''}, uint8 activations, percentile "
                  "calibration (99.999); softmax in float32",
        "reduce_range": reduce_range,
        "onnxruntime": onnxruntime.__version__,
        "calibration_images": int(len(chosen)), "calibration_seed": seed,
        "calibration_from": "training part of the split (no validation or test image)",
        "source_model_version": meta.get(contract.META_MODEL_VERSION, ""),
        "source_model_sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
        "validation_images": int(len(labels)),
        "fp32_val_accuracy": round(fp32.accuracy, 5), "int8_val_accuracy": round(int8.accuracy, 5),
        "fp32_val_loss": round(fp32.loss, 5), "int8_val_loss": round(int8.loss, 5),
        "argmax_agreement": round(float(np.mean(same)), 5),
        # How sure FP32 was where the two differ, against where they agree.
        "fp32_top1_median_where_different": round(float(np.median(top1[~same])), 4) if (~same).any() else None,
        "fp32_top1_median_where_same": round(float(np.median(top1[same])), 4) if same.any() else None,
        "max_abs_delta_p": round(float(np.abs(fp32_probs - int8_probs).max()), 5),
    }
    if len(split.test):
        images, labels = dataset.images[split.test], dataset.labels[split.test]
        fp32_test = evaluate.evaluate_onnx(model_path, images, labels)
        int8_test = evaluate.evaluate_onnx(quantized, images, labels)
        record.update({"test_images": int(len(labels)), "fp32_test_accuracy": round(fp32_test.accuracy, 5),
                       "int8_test_accuracy": round(int8_test.accuracy, 5)})
        meta[contract.META_TEST_METRICS] = json.dumps(int8_test.metrics("test"), sort_keys=True)
        per_class = {"fp32_test": fp32_test.per_class_accuracy, "int8_test": int8_test.per_class_accuracy}
        confusion = int8_test.confusion_matrix
    else:
        per_class, confusion = {}, int8.confusion_matrix
    per_class = {"fp32_validation": fp32.per_class_accuracy, "int8_validation": int8.per_class_accuracy,
                 **per_class}
    record["seconds"] = round(time.perf_counter() - started, 1)
    record["host"] = f"{cpu_model()}, {os.cpu_count()} cores"
    metrics = {"val_accuracy": int8.accuracy, "val_loss": int8.loss, "val_images": int8.images,
               "per_class_accuracy": int8.per_class_accuracy,
               "fp32_validation_metrics": json.loads(meta.get(contract.META_VALIDATION_METRICS, "{}"))}
    meta.update({
        contract.META_MODEL_VERSION: f"{record['source_model_version']}-int8",
        contract.META_VALIDATION_METRICS: json.dumps(metrics, sort_keys=True),
        contract.META_CREATED: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        META_QUANTIZATION: json.dumps(record, sort_keys=True),
    })
    model = onnx.load_from_string(quantized)
    export.set_metadata(model, meta)
    # Checked as the server checks it (contract, probabilities) before it replaces ``output``.
    export.write_model_atomically(model.SerializeToString(), output, check=export.check_model_file)
    card = output.with_suffix(".md")
    source_card = model_path.with_suffix(".md")
    training = _training_line(source_card.read_text()) if source_card.is_file() else ""
    card.write_text(model_card(output.name, meta, record, per_class, confusion, training))
    log.info("wrote %s in %.1f s: validation accuracy %.2f %% (FP32 %.2f %%), argmax agreement "
             "%.2f %%", output, time.perf_counter() - started, 100 * int8.accuracy,
             100 * fp32.accuracy, 100 * record["argmax_agreement"])
    return record


def _training_line(fp32_card: str) -> str:
    """The FP32 card's training time and host line, for the INT8 card."""
    lines = [line for line in fp32_card.splitlines() if line.startswith("Training time:")]
    return lines[0] if lines else ""


def model_card(file_name: str, meta: dict[str, str], record: dict,
               per_class: dict[str, dict[str, float]] | None = None,
               confusion: list[list[int]] | None = None, training: str = "") -> str:
    """The INT8 copy's card: what it is, how it was made, its figures next to FP32's: per
    class, and the INT8 confusion matrix (of the test part where there is one)."""
    from cifar10_training.report import confusion_table

    version = meta[contract.META_MODEL_VERSION]
    per_class = per_class or {}
    columns = [name for name in ("fp32_validation", "int8_validation", "fp32_test", "int8_test")
               if name in per_class]
    class_table = ""
    if columns:
        heads = " | ".join(name.replace("_", " ").replace("fp32", "FP32").replace("int8", "INT8")
                           for name in columns)
        rows = "\n".join(f"| {label} | " + " | ".join(f"{per_class[c][label]:.1%}" for c in columns) + " |"
                         for label in contract.CLASS_NAMES)
        class_table = (f"\n## Per class\n\n| class | {heads} |\n| --- |{' ---: |' * len(columns)}\n"
                       f"{rows}\n")
    if confusion is not None:
        part = "test part" if "int8_test" in per_class else "validation images"
        class_table += (f"\nINT8 confusion matrix ({part}; rows: true class, columns: predicted, in "
                        f"label order):\n\n{confusion_table(confusion)}\n")
    made = ""
    if "seconds" in record:
        made = f"Quantized and evaluated in {record['seconds']:.0f} s on {record['host']}.\n"
    trained = f"\n## Training\nFrom the FP32 model's card: {training}\n" if training else ""
    return f"""# Model card: {meta[contract.META_MODEL_NAME]} {version}

File: `{file_name}`: the INT8 copy of {meta[contract.META_MODEL_NAME]} \
{record["source_model_version"]} (sha256 `{record["source_model_sha256"][:16]}...`), made by
`cifar10-train quantize`. Same contract as the FP32 model: input `images` uint8
[N, 32, 32, 3] RGB NHWC, output `probabilities` float32 [N, 10] summing to 1, same labels
and metadata, plus `{META_QUANTIZATION}`. Serve it as a version of a model of its own in a
model repository (`<repository>/<name>/<version>/model.onnx`), or alone with `--model-path`.

## How it was made
{record["method"]}; onnxruntime {record["onnxruntime"]}.
Calibration: {record["calibration_images"]} images (seed {record["calibration_seed"]}) from the
training part of the split, no validation image.
{made}{trained}
## Validation figures
The same {record["validation_images"]} validation images as the FP32 model's card, through
onnxruntime:

| | FP32 | INT8 |
| --- | ---: | ---: |
| accuracy | {record["fp32_val_accuracy"]:.2%} | {record["int8_val_accuracy"]:.2%} |
| loss (cross-entropy) | {record["fp32_val_loss"]:.4f} | {record["int8_val_loss"]:.4f} |

{_test_row(record)}
The INT8 model picks the same class as the FP32 model for {record["argmax_agreement"]:.2%}
of these images. Where they differ, the FP32 model was unsure: its top probability there
has median {record["fp32_top1_median_where_different"]} (where they agree:
{record["fp32_top1_median_where_same"]}). The largest change of one probability is
{record["max_abs_delta_p"]:.3f}. Speed: docs/benchmarks.md.
{class_table}"""


def _test_row(record: dict) -> str:
    """The test part's accuracies, for models that have one."""
    if "test_images" not in record:
        return ""
    return (f"On the {record['test_images']} images of the test part: FP32 {record['fp32_test_accuracy']:.2%}, "
            f"INT8 {record['int8_test_accuracy']:.2%}.\n")
