"""Training's check of a written model: the core's contract check and rows that are
probabilities, the same refusals as the server's loader. No TensorFlow needed."""

from __future__ import annotations

import pytest

from cifar10_core.errors import ModelLoadError
from cifar10_training import export
from tests.serving import models
from tests.tiny_model import write_tiny_model


def test_a_contract_honouring_model_is_written(tmp_path):
    source = write_tiny_model(tmp_path / "tiny.onnx")
    output = tmp_path / "out" / "model.onnx"
    export.write_model_atomically(source.read_bytes(), output, check=export.check_model_file)
    assert output.read_bytes() == source.read_bytes()


@pytest.mark.parametrize(
    "make, message",
    [
        (models.no_softmax, "rows sum to"),
        (models.nan_output, "non-finite"),
        (models.wrong_labels, "breaks the model contract: metadata class_names_json must be"),
        (models.float_input, "must be tensor(uint8)"),
        (models.garbage, "onnxruntime cannot load"),
    ],
    ids=["not-probabilities", "nan", "labels", "dtype", "garbage"],
)
def test_a_model_the_server_would_refuse_is_not_written(tmp_path, make, message):
    bad = make(tmp_path / "bad.onnx")
    output = tmp_path / "model.onnx"
    output.write_bytes(b"the previous model")
    with pytest.raises(ModelLoadError) as info:
        export.write_model_atomically(bad.read_bytes(), output, check=export.check_model_file)
    assert message in str(info.value)
    assert output.read_bytes() == b"the previous model"
    assert not list(tmp_path.glob(".*.tmp"))
