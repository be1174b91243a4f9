"""OnnxModel: contract validation of model files, warm-up, predict, NaN guard."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from cifar10_core import contract
from cifar10_core.errors import ModelLoadError
from cifar10_serving.onnx_model import ElasticSessions, OnnxModel
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
        (models.no_softmax, "rows sum to"),
    ],
    ids=["missing", "garbage", "metadata", "labels", "dtype", "output", "shape", "nan", "not-probabilities"],
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


def test_a_run_alone_gets_the_wide_session_and_a_run_beside_it_the_narrow_one():
    sessions = ElasticSessions("wide", "narrow")
    with sessions.acquire() as first:
        assert first == "wide"
        with sessions.acquire() as second:
            assert second == "narrow"
            assert sessions.in_flight == 2
        with sessions.acquire() as third:  # the first run is still in flight
            assert third == "narrow"
    assert sessions.in_flight == 0
    with sessions.acquire() as alone_again:
        assert alone_again == "wide"
    with sessions.acquire(alone=False) as busy:  # no other run, but the caller has more work
        assert busy == "narrow"


def test_without_a_narrow_session_every_run_is_wide_and_a_failed_run_frees_its_place():
    sessions = ElasticSessions("only")
    with sessions.acquire() as a, sessions.acquire() as b:
        assert a == b == "only"
    with pytest.raises(RuntimeError), sessions.acquire():
        raise RuntimeError("the run failed")
    assert sessions.in_flight == 0


def test_two_instances_load_two_sessions_that_give_the_same_answers(tiny_model_path):
    model = OnnxModel.load(tiny_model_path, threads=2, overlap_threads=1)
    assert len(model.sessions.all()) == 2
    images = np.random.default_rng(1).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    wide, narrow = model.sessions.all()
    np.testing.assert_allclose(model._predict_on(wide, images), model._predict_on(narrow, images),
                               rtol=1e-5, atol=1e-6)
    # Runs from two threads at once: whichever session a run gets, every answer is its own.
    barrier = threading.Barrier(2)
    results = {}

    def caller(i):
        barrier.wait()
        results[i] = [model.predict(images[i:i + 1]) for _ in range(200)]

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        expected = model._predict_on(wide, images[i:i + 1])
        for out in results[i]:
            np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert all(len(results[i]) == 200 for i in range(2))
    assert model.sessions.in_flight == 0  # every run has ended


def test_one_instance_or_one_thread_loads_one_session(tiny_model_path):
    assert len(OnnxModel.load(tiny_model_path, threads=2).sessions.all()) == 1
    assert len(OnnxModel.load(tiny_model_path, threads=1, overlap_threads=1).sessions.all()) == 1
