"""OnnxModel: contract validation of model files, warm-up, predict, NaN guard."""

from __future__ import annotations

import numpy as np
import pytest

from serving import contract
from serving.errors import ModelLoadError
from serving.model import OnnxModel
from tests.serving import models


def test_loads_the_tiny_model_and_predicts(tiny_model_path):
    model = OnnxModel.load(tiny_model_path, threads=1)
    assert (model.name, model.version) == ("tiny-cnn", "1")
    assert model.info.labels == contract.CLASS_NAMES
    assert set(contract.REQUIRED_METADATA) <= set(model.info.metadata)
    out = model.predict(np.zeros((5, 32, 32, 3), np.uint8))
    assert out.shape == (5, 10) and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    assert model.signature is not None and model.signature.size > 0


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p, "model file not found"),
        (models.garbage, "onnxruntime cannot load"),
        (models.missing_metadata, "metadata keys missing: dataset"),
        (models.wrong_labels, "class_names_json must be"),
        (models.float_input, "must be tensor(uint8)"),
        (models.renamed_output, "output named 'probabilities'"),
        (models.wrong_input_shape, "shape [N, 32, 32, 3]"),
        (models.nan_output, "non-finite"),
    ],
    ids=["missing", "garbage", "metadata", "labels", "dtype", "output", "shape", "nan"],
)
def test_bad_model_files_are_rejected_with_one_clear_message(tmp_path, make, message):
    path = make(tmp_path / "bad.onnx")
    with pytest.raises(ModelLoadError) as info:
        OnnxModel.load(path, threads=1)
    text = str(info.value)
    assert message in text
    assert "\n" not in text and str(path) in text


def test_directory_and_empty_file(tmp_path):
    with pytest.raises(ModelLoadError, match="directory"):
        OnnxModel.load(tmp_path)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty"):
        OnnxModel.load(empty)
