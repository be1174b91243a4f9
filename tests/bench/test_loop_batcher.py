"""bench.loop_batcher alone (no gRPC): every caller gets the model's own rows, a lone request
runs through the model's wide path, batched ones through onnxruntime's run_async."""

from __future__ import annotations

import asyncio

import numpy as np

from bench.loop_batcher import LoopBatcher, async_session
from cifar10_serving.onnx_model import OnnxModel
from tests.tiny_model import write_tiny_model


class Counting:
    """An InferenceSession's run_async, counted (the real session does the work)."""

    def __init__(self, session):
        self.session = session
        self.batches: list[int] = []

    def run_async(self, outputs, feeds, callback, user_data):
        self.batches.append(len(next(iter(feeds.values()))))
        self.session.run_async(outputs, feeds, callback, user_data)


def test_lone_and_batched_requests_get_the_models_rows(tmp_path):
    path = str(write_tiny_model(tmp_path / "tiny-cnn.onnx"))
    model = OnnxModel.load(path)
    sessions = [Counting(async_session(path)) for _ in range(2)]
    images = np.random.default_rng(0).integers(0, 256, (41, 32, 32, 3), dtype=np.uint8)

    async def scenario():
        batcher = LoopBatcher(model, sessions, max_batch_size=8)
        try:
            lone = await batcher.submit(images[:1])
            rest = await asyncio.gather(*(batcher.submit(images[i:i + 1]) for i in range(1, 41)))
        finally:
            batcher.close_nowait()
        return [lone, *rest]

    answers = asyncio.run(scenario())
    np.testing.assert_allclose(np.concatenate(answers), model.predict(images), atol=1e-5)
    batched = [n for session in sessions for n in session.batches]
    assert sum(batched) >= 32 and max(batched) <= 8  # most rows went through run_async
