"""bench.standin_model builds a model the server loads (the benchmark's `--real` without the
bundled model): the seed CNN's architecture, exported like the real one, random weights."""

from __future__ import annotations

import pytest

from cifar10_core import contract
from cifar10_serving.onnx_model import OnnxModel

pytestmark = [pytest.mark.training, pytest.mark.slow]


def test_standin_is_a_servable_seed_cnn(tmp_path):
    pytest.importorskip("tensorflow")
    from bench.standin_model import build

    model = OnnxModel.load(build(tmp_path / "standin.onnx"))
    assert (model.name, model.version) == ("cifar10-cnn", "0")
    assert model.info.metadata[contract.META_DATASET] == "none (untrained stand-in)"
