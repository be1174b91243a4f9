"""Accuracy, per-class accuracy and a confusion-matrix PNG from a batch run's output."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cifar10_core.contract import CLASS_NAMES
from cifar10_core.extras import require



@dataclass
class Summary:
    total: int
    failed: int
    labelled: int  # successful rows with a known true label
    correct: int
    confusion: np.ndarray  # [true, predicted]

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    def per_class(self) -> list[tuple[str, int, float | None]]:
        rows = []
        for i, name in enumerate(CLASS_NAMES):
            count = int(self.confusion[i].sum())
            rows.append((name, count, float(self.confusion[i, i]) / count if count else None))
        return rows

    def text(self) -> str:
        lines = [f"{self.total} items in the output, {self.failed} failed"]
        if self.labelled:
            lines.append(f"accuracy: {self.accuracy:.4f} ({self.correct}/{self.labelled})")
            lines.append("per-class accuracy:")
            for name, count, acc in self.per_class():
                lines.append(f"  {name:<11} {'-' if acc is None else f'{acc:.4f}':>7}  ({count} images)")
        return "\n".join(lines)


def summarize(outcomes: list[tuple[Any, Any, bool]]) -> Summary:
    """From ``(true_label, predicted_label, failed)`` per output line."""
    index = {name: i for i, name in enumerate(CLASS_NAMES)}
    confusion = np.zeros((len(CLASS_NAMES), len(CLASS_NAMES)), dtype=np.int64)
    failed = 0
    for true_label, label, error in outcomes:
        if error:
            failed += 1
            continue
        true, predicted = index.get(true_label or ""), index.get(label or "")
        if true is not None and predicted is not None:
            confusion[true, predicted] += 1
    labelled = int(confusion.sum())
    return Summary(len(outcomes), failed, labelled, int(np.trace(confusion)), confusion)


def write_confusion_png(summary: Summary, path: str | os.PathLike, title: str = "") -> Path:
    """Write the confusion matrix (rows: true class, columns: predicted) as a PNG.

    Raises MissingExtraError (an ImportError) naming the ``plots`` extra without matplotlib.
    """
    require("the confusion-matrix PNG", "plots", "matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    path = Path(path)
    matrix = summary.confusion
    fig, ax = plt.subplots(figsize=(8, 7), dpi=100)
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = range(len(CLASS_NAMES))
    ax.set_xticks(ticks, CLASS_NAMES, rotation=45, ha="right")
    ax.set_yticks(ticks, CLASS_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in ticks:
        for j in ticks:
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if matrix[i, j] > threshold else "black")
    accuracy = summary.accuracy
    heading = title or "confusion matrix"
    if accuracy is not None:
        heading += f" (accuracy {accuracy:.4f}, n={summary.labelled})"
    ax.set_title(heading, fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
