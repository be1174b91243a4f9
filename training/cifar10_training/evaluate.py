"""Evaluate an ONNX model through onnxruntime, the same path serving takes.

Accuracy, per-class accuracy, mean cross-entropy loss and the confusion matrix
(rows: true class, columns: predicted class).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cifar10_core import contract


@dataclass
class Evaluation:
    images: int
    accuracy: float
    loss: float
    per_class_accuracy: dict[str, float]
    confusion_matrix: list[list[int]]

    def to_dict(self) -> dict:
        return asdict(self)

    def metrics(self, part: str) -> dict:
        """The figures as metadata entries of one part of the split, e.g. ``test_accuracy``."""
        return {f"{part}_accuracy": self.accuracy, f"{part}_loss": self.loss, f"{part}_images": self.images,
                "per_class_accuracy": self.per_class_accuracy, "confusion_matrix": self.confusion_matrix}


def predict_onnx(model_path: Path | bytes, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Probabilities [N, 10] of an ONNX model on uint8 images [N, 32, 32, 3]."""
    import onnxruntime as ort

    source = str(model_path) if isinstance(model_path, Path) else model_path
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    out = [
        session.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: images[i : i + batch_size]})[0]
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, contract.NUM_CLASSES), np.float32)


def score(probabilities: np.ndarray, labels: np.ndarray) -> Evaluation:
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((contract.NUM_CLASSES, contract.NUM_CLASSES), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {
        name: float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else float("nan")
        for i, name in enumerate(contract.CLASS_NAMES)
    }
    picked = probabilities[np.arange(len(labels)), labels]
    return Evaluation(
        images=int(len(labels)),
        accuracy=float(np.mean(predicted == labels)),
        loss=float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0)))),
        per_class_accuracy=per_class,
        confusion_matrix=confusion.tolist(),
    )


def evaluate_onnx(model_path: Path | bytes, images: np.ndarray, labels: np.ndarray) -> Evaluation:
    return score(predict_onnx(model_path, images), labels)
