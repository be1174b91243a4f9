"""The rows ``cifar10-batch`` writes, one per input: a classification or an error.

Built from a server's answers (``batch.RemoteBackend``), from the model in this process
(``classify_locally``: --local, and the actors of ``--engine ray``) or from an engine's result
columns (``engine.rows_of``), so every mode writes the same rows.
"""

from __future__ import annotations

import numpy as np

from cifar10_core.contract import CLASS_NAMES
from cifar10_core.errors import InvalidInputError

from .errors import ClientError
from .local_model import LocalModel
from .outputs import KEY
from .results import Classification
from .sources import Item


def _true_label(item: Item) -> str | None:
    return None if item.label is None else CLASS_NAMES[item.label]


def result_row(item: Item, result: Classification) -> dict:
    return {
        KEY: item.key, "true_label": _true_label(item), "label": result.label, "index": result.index,
        "probability": result.probability, "probabilities": result.probabilities,
        "labels": result.labels, "model_name": result.model_name,
        "model_version": result.model_version, "error": "", "error_code": "",
    }


def error_row(item: Item, error: ClientError | InvalidInputError, model_name: str = "",
              model_version: str = "") -> dict:
    if isinstance(error, ClientError):
        code, message = error.code.name, error.message
    else:
        code, message = getattr(error, "status_name", "INVALID_ARGUMENT"), str(error)
    return failed_row(item, code, message, model_name, model_version)


def failed_row(item: Item, code: str, message: str, model_name: str = "", model_version: str = "") -> dict:
    return {
        KEY: item.key, "true_label": _true_label(item), "error": message or code, "error_code": code,
        "model_name": model_name, "model_version": model_version,
    }


def classify_locally(model: LocalModel, batch: list[Item]) -> list[dict]:
    """Rows for ``batch`` from the model in this process: each item preprocessed with
    cifar10_core.images, one ``predict`` for the batch (--local and the engine's actors alike)."""
    rows: list[dict | None] = [None] * len(batch)
    arrays, positions = [], []
    for i, item in enumerate(batch):
        try:
            arrays.append(item.to_array())
            positions.append(i)
        except (ClientError, InvalidInputError) as error:
            rows[i] = error_row(item, error, model.name, model.version)
    if arrays:
        probabilities = model.predict(np.stack(arrays))
        for i, row in zip(positions, probabilities):
            result = Classification.from_probabilities(row, CLASS_NAMES, 1, model.name, model.version)
            rows[i] = result_row(batch[i], result)
    return rows
