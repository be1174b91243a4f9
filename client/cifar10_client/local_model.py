"""The model in this process (``cifar10-batch --local``): one ONNX file, one onnxruntime session.

``LocalModel.load(path, threads)`` reads the file, checks it against the model contract
(``cifar10_core.contract.check`` and ``check_answers``, as the server does) and raises
``ModelLoadError`` with one line for a missing file, a file onnxruntime cannot read or a
model that breaks the contract. The client's own loader, not the server's: the client
library imports no server module. onnxruntime (the ``local`` extra) is imported only when
a model is loaded.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from cifar10_core import contract
from cifar10_core.cpus import available_cpus
from cifar10_core.errors import ModelLoadError

if TYPE_CHECKING:
    import onnxruntime as ort


class LocalModel:
    """A loaded and checked model. ``predict`` is thread-safe (onnxruntime's ``run`` is)."""

    def __init__(self, session: ort.InferenceSession, name: str, version: str, path: str) -> None:
        self.session = session
        self.name = name
        self.version = version
        self.path = path

    @classmethod
    def load(cls, path: str | os.PathLike, threads: int = 0) -> LocalModel:
        """Load ``path`` with ``threads`` intra-op threads (0: ``available_cpus()``), check the
        contract and run the contract's test batches. Raises ModelLoadError."""
        import onnxruntime as ort

        path = os.fspath(path)
        data, _ = contract.read_model(path)

        # The server's session settings, so that --local gives the server's probabilities.
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads)) if threads else available_cpus()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a bad file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"onnxruntime cannot load {path}: {first}") from None

        meta = dict(session.get_modelmeta().custom_metadata_map)
        contract.check(path, session.get_inputs(), session.get_outputs(), meta)
        model = cls(session, *contract.model_identity(meta), path)
        contract.check_answers(model.predict, path)
        return model

    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, 32, 32, 3] -> float32 [N, 10]. Raises NonFiniteOutputError on NaN/inf."""
        (out,) = self.session.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: images})
        return contract.finite_probabilities(out, self.name)
