"""The data plane on its own, with no transport: what any door gets from it."""

from __future__ import annotations

import asyncio
import io
import time

import numpy as np
import pytest
from PIL import Image

from cifar10_core.errors import (
    DeadlineExceededError,
    InvalidInputError,
    OverloadedError,
    UnavailableError,
    UnknownModelError,
)
from cifar10_serving.assembly import build_plane
from cifar10_serving.dataplane.request import Conversion, InferenceRequest, RawImage, deadline_after
from cifar10_serving.settings import Settings


def png(side: int, color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), color).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def plane(tiny_model_path):
    return build_plane(Settings(model_path=str(tiny_model_path), reload_interval_s=0,
                                max_inflight_requests=2, max_inflight_bytes=1000))


def run(plane, scenario):
    async def main():
        try:
            return await scenario()
        finally:
            await plane.stop(5)

    return asyncio.run(main())


def test_every_form_of_images_gives_the_models_answer(plane):
    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    expected = plane.models.default.predict(pixels)

    async def scenario():
        as_array = await plane.infer(InferenceRequest(pixels))
        as_raw = await plane.infer(InferenceRequest(
            [RawImage(p.tobytes(), 32, 32, 3) for p in pixels]))
        converted = await plane.infer(InferenceRequest(Conversion(lambda: pixels)))
        converted_inline = await plane.infer(InferenceRequest(Conversion(lambda: pixels, cheap=True)))
        return as_array, as_raw, converted, converted_inline

    for result in run(plane, scenario):
        np.testing.assert_allclose(result.probabilities, expected, rtol=1e-5, atol=1e-7)
        assert result.model.name == "tiny-cnn" and result.failures == ()


def test_images_that_do_not_decode_fail_alone(plane):
    async def scenario():
        return await plane.infer(InferenceRequest([png(40), b"not an image", png(8, "blue")]))

    result = run(plane, scenario)
    assert result.probabilities.shape == (2, 10)
    assert [f.index for f in result.failures] == [1]
    assert isinstance(result.failures[0].error, InvalidInputError)


def test_errors_are_the_core_errors(plane):
    one = np.zeros((1, 32, 32, 3), np.uint8)

    async def scenario():
        with pytest.raises(UnknownModelError, match="this server serves 'tiny-cnn'"):
            await plane.infer(InferenceRequest(one, model_name="other"))
        with pytest.raises(UnknownModelError, match="version"):
            await plane.infer(InferenceRequest(one, model_version="9"))
        with pytest.raises(InvalidInputError, match="no images"):
            await plane.infer(InferenceRequest([]))
        with pytest.raises(DeadlineExceededError):  # passed while it waited for a decode thread
            await plane.infer(InferenceRequest([png(8)], deadline=time.monotonic() - 1))
        with plane.admission.admit(900):  # admission counts the request's size on the wire
            with pytest.raises(OverloadedError):
                await plane.infer(InferenceRequest(one, wire_bytes=200))
            assert (await plane.infer(InferenceRequest(one, wire_bytes=100))).probabilities.shape == (1, 10)
        plane.close()
        assert not plane.ready
        with pytest.raises(UnavailableError):
            await plane.infer(InferenceRequest(one))
        assert plane.inflight == 0

    run(plane, scenario)


def test_a_caller_that_leaves_takes_its_request_with_it(plane):
    async def scenario():
        task = asyncio.ensure_future(plane.infer(InferenceRequest(
            [png(2000)] * 8, deadline=deadline_after(60))))
        await asyncio.sleep(0.05)
        assert plane.inflight == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert plane.inflight == 0

    run(plane, scenario)
