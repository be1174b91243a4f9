"""Typed results of the client library (plain dataclasses, no protobuf in the public API)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cifar10_core import contract
from cifar10_protos.cifar10.v2 import classifier_pb2 as pb


@dataclass(frozen=True)
class ClassScore:
    """One class and its probability."""

    index: int
    label: str
    probability: float


@dataclass(frozen=True)
class Classification:
    """The answer for one image.

    ``label``/``index``/``probability`` are the top-1 class; ``probabilities`` holds all
    ten probabilities in label order (``labels``); ``top`` the requested top-k, most
    probable first.
    """

    label: str
    index: int
    probability: float
    probabilities: tuple[float, ...]
    labels: tuple[str, ...]
    top: tuple[ClassScore, ...]
    model_name: str = ""
    model_version: str = ""

    @property
    def scores(self) -> dict[str, float]:
        """``{label: probability}`` for all ten classes, in label order."""
        return dict(zip(self.labels, self.probabilities))

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "index": self.index,
            "probability": self.probability,
            "top": [
                {"index": s.index, "label": s.label, "probability": s.probability} for s in self.top
            ],
            "probabilities": self.scores,
            "model_name": self.model_name,
            "model_version": self.model_version,
        }

    @classmethod
    def from_row(
        cls,
        probabilities: tuple[float, ...],
        top: list[int],
        labels: tuple[str, ...],
        model_name: str = "",
        model_version: str = "",
    ) -> "Classification":
        """One image's answer: its probabilities in label order and its top label indices,
        most probable first."""
        scores = tuple([ClassScore(i, labels[i], probabilities[i]) for i in top])
        best = scores[0]
        return cls(
            label=best.label,
            index=best.index,
            probability=best.probability,
            probabilities=probabilities,
            labels=labels,
            top=scores,
            model_name=model_name,
            model_version=model_version,
        )

    @classmethod
    def from_probabilities(
        cls,
        probabilities: Any,
        labels: tuple[str, ...],
        top_k: int = 1,
        model_name: str = "",
        model_version: str = "",
    ) -> "Classification":
        """Build a result from one row of model output (used by local, in-process runs).

        Probabilities go through float32, as on the wire, so local and server results match.
        """
        import numpy as np

        row = np.asarray(probabilities, dtype=np.float32)
        values = tuple(float(p) for p in row)
        k = max(1, min(int(top_k) or 1, len(values)))
        order = sorted(range(len(values)), key=lambda i: (-values[i], i))[:k]
        return cls.from_row(values, order, tuple(labels), model_name, model_version)


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    description: str = ""


@dataclass(frozen=True)
class Accuracy:
    """A model's accuracy on a part of its data (from the training job's metrics)."""

    accuracy: float
    images: int


# (part, metadata key, its accuracy figure, its image count) of the training job's metrics.
_METRICS = (("validation", contract.META_VALIDATION_METRICS, "val_accuracy", "val_images"),
            ("test", contract.META_TEST_METRICS, "test_accuracy", "test_images"))


def accuracy_of(metadata: dict[str, str]) -> dict[str, Accuracy]:
    """``{"validation": ..., "test": ...}`` from a model's metadata, the parts it carries."""
    found = {}
    for part, key, figure, count in _METRICS:
        try:
            metrics = json.loads(metadata[key])
            found[part] = Accuracy(float(metrics[figure]), int(metrics[count]))
        except (KeyError, TypeError, ValueError):
            continue  # a model made before that figure existed, or without it
    return found


@dataclass(frozen=True)
class ModelInfo:
    """What the server says about the served model.

    ``metadata``: the model's metadata (gRPC: all of it; HTTP: what the HTTP door shows,
    when it was made and on what data); ``accuracy``: its accuracy figures, by part
    (``validation``, ``test``); ``max_batch_size``: the server's largest merged batch
    (0: not told, over HTTP).
    """

    name: str
    version: str
    labels: tuple[str, ...]
    input: TensorInfo
    output: TensorInfo
    max_batch_size: int
    metadata: dict[str, str] = field(default_factory=dict)
    accuracy: dict[str, Accuracy] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, info: pb.ModelInfo) -> "ModelInfo":
        def tensor(spec: pb.TensorSpec) -> TensorInfo:
            return TensorInfo(spec.name, spec.dtype, tuple(int(d) for d in spec.shape), spec.description)

        return cls(
            name=info.name,
            version=info.version,
            labels=tuple(info.labels),
            input=tensor(info.input),
            output=tensor(info.output),
            max_batch_size=int(info.max_batch_size),
            metadata=dict(info.metadata),
            accuracy=accuracy_of(info.metadata),
        )

    def to_dict(self) -> dict[str, Any]:
        def tensor(t: TensorInfo) -> dict[str, Any]:
            return {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "description": t.description}

        return {
            "name": self.name,
            "version": self.version,
            "labels": list(self.labels),
            "input": tensor(self.input),
            "output": tensor(self.output),
            "max_batch_size": self.max_batch_size,
            "metadata": dict(self.metadata),
            "accuracy": {part: {"accuracy": a.accuracy, "images": a.images} for part, a in self.accuracy.items()},
        }


@dataclass(frozen=True)
class ServedModels:
    """Every model version a server serves (``models``: by name, newest version first) and
    its default model (``default_model``: that of requests that name none)."""

    default_model: str
    models: list[ModelInfo]

    def to_dict(self) -> dict[str, Any]:
        return {"default_model": self.default_model,
                "models": [info.to_dict() for info in self.models]}
