"""The hand-written ClassifyResponse encoder parses to exactly what the protobuf API builds."""

from __future__ import annotations

import numpy as np
import pytest

from cifar10_core import contract
from cifar10_serving.classifier_servicer import ResponseEncoder, build_response
from cifar10_serving.core import Prediction
from cifar10_serving.model import ModelInfo
from cifar10_serving.proto.cifar10.v2 import classifier_pb2 as pb


@pytest.mark.parametrize("top_k", [1, 3, 10])
@pytest.mark.parametrize("n", [1, 7, 200])
def test_encoder_matches_protobuf(top_k, n):
    rng = np.random.default_rng(n)
    probs = rng.dirichlet(np.ones(10), size=n).astype(np.float32)
    probs[0, 0] = 0.0  # defaults (index 0, probability 0.0) must round-trip too
    probs[-1, 3] = probs[-1, 4]  # ties: the stable order of build_response
    info = ModelInfo(name="m" * 200, version="v1.2", labels=contract.CLASS_NAMES, metadata={})
    pred = Prediction(probs, info)
    expected = build_response(pred, top_k, "req-\u00e9")
    data = ResponseEncoder(contract.CLASS_NAMES).encode(pred, top_k, "req-\u00e9")
    assert pb.ClassifyResponse.FromString(data) == expected
    assert pb.ClassifyResponse.FromString(ResponseEncoder(contract.CLASS_NAMES).encode(pred, top_k)).request_id == ""
