"""The ClassifyResponse the server builds round-trips through protobuf's own serializer and
parses, in the client, to the same answers as a local run of the same probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from cifar10_core import contract
from cifar10_core.errors import InvalidInputError
from cifar10_serving.grpc_api.classifier import build_response
from cifar10_client import ClientError
from cifar10_client.messages import outcomes
from cifar10_client.results import Classification
from cifar10_serving.dataplane.request import ImageFailure, InferenceResult
from cifar10_serving.onnx_model import ModelInfo
from cifar10_protos.cifar10.v2 import classifier_pb2 as pb

INFO = ModelInfo(name="m" * 200, version="v1.2", labels=contract.CLASS_NAMES, metadata={})


def probabilities(n: int) -> np.ndarray:
    probs = np.random.default_rng(n).dirichlet(np.ones(10), size=n).astype(np.float32)
    probs[0, 0] = 0.0  # defaults (index 0, probability 0.0) must round-trip too
    probs[-1, 3] = probs[-1, 4] = probs[-1].max() + 0.5  # a tie for first: lower index first
    return probs


@pytest.mark.parametrize("top_k", [1, 3, 10])
@pytest.mark.parametrize("n", [1, 7, 200])
def test_response_round_trips_and_parses_like_a_local_run(top_k, n):
    probs = probabilities(n)
    response = build_response(InferenceResult(probs, INFO), top_k, "req-\u00e9")
    parsed = pb.ClassifyResponse.FromString(response.SerializeToString())
    assert parsed == response
    assert list(parsed.labels) == list(contract.CLASS_NAMES) and parsed.top_k == top_k
    assert (parsed.model_name, parsed.model_version, parsed.request_id) == (INFO.name, "v1.2", "req-\u00e9")
    np.testing.assert_array_equal(np.array(parsed.probabilities, np.float32), probs.ravel())
    results = outcomes(parsed, n)
    assert results == [
        Classification.from_probabilities(row, contract.CLASS_NAMES, top_k, INFO.name, "v1.2")
        for row in probs
    ]
    assert results[-1].index == 3 and results[-1].top[0].index == 3


def test_image_errors_take_their_places_among_the_results():
    probs = probabilities(3)
    errors = [ImageFailure(i, InvalidInputError(f"bad {i}"))
              for i in (0, 2)]
    parsed = pb.ClassifyResponse.FromString(
        build_response(InferenceResult(probs, INFO, tuple(errors)), 2).SerializeToString()
    )
    results = outcomes(parsed, 5)
    assert [type(r).__name__ for r in results] == [
        "ClientError", "Classification", "ClientError", "Classification", "Classification"
    ]
    assert (results[2].code_name, results[2].message, results[2].item) == ("INVALID_ARGUMENT", "bad 2", "2")
    assert [r.probabilities for r in results if isinstance(r, Classification)] == [
        tuple(float(p) for p in row) for row in probs
    ]


@pytest.mark.parametrize("count", [2, 3, 5])
def test_a_response_that_does_not_fit_the_request_is_internal(count):
    """3 rows and an error for image 3 answer a request of 4 images, no other."""
    errors = (ImageFailure(3, InvalidInputError("bad")),)
    response = build_response(InferenceResult(probabilities(3), INFO, errors), 1)
    assert len(outcomes(response, 4)) == 4
    with pytest.raises(ClientError, match="malformed response") as info:
        outcomes(response, count)
    assert info.value.code_name == "INTERNAL"
