"""Images to model input, off the event loop: Pillow and large conversions on decode threads.

Encoded images and raw images of other sizes go through ``cifar10_core.images`` (the one
shared preprocessing) within a per-request pixel budget; a deadline or a caller that left
stops the work between images (``WorkCheck``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from cifar10_core import contract, images
from cifar10_core.errors import DeadlineExceededError, InvalidInputError
from cifar10_serving.dataplane.request import ImageFailure, ImageInput, RawImage

T = TypeVar("T")

ERRORS_IN_MESSAGE = 3
"""Per-image problems an error message quotes (``failures_message``)."""


def failures_message(failures: Sequence[ImageFailure]) -> str:
    """The first few images that failed, each with its problem, and how many more did."""
    quoted = "; ".join(f"image {f.index}: {f.error}" for f in failures[:ERRORS_IN_MESSAGE])
    more = len(failures) - ERRORS_IN_MESSAGE
    return quoted + (f"; and {more} more" if more > 0 else "")


class WorkCheck:
    """``check()`` for offloaded work: raises DeadlineExceededError once the deadline has
    passed or the caller has gone, so a long decode stops between images."""

    __slots__ = ("deadline", "abandoned")

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.abandoned = False

    def __call__(self) -> None:
        if self.abandoned:
            raise DeadlineExceededError("the caller has gone; work stopped")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise DeadlineExceededError("deadline passed while decoding; work stopped")


class Decoder:
    """Runs decode work on its own threads; ``decode_each`` is the work for image inputs."""

    def __init__(self, threads: int, max_image_pixels: int, max_request_pixels: int) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="decode")
        self.max_image_pixels = max_image_pixels
        self.max_request_pixels = max_request_pixels

    async def run(self, work: Callable[[WorkCheck], T], deadline: float | None) -> T:
        """``work(check)`` on a decode thread; ``check()`` raises once ``deadline`` passed or
        this call was cancelled."""
        check = WorkCheck(deadline)
        future = asyncio.get_running_loop().run_in_executor(self._pool, work, check)
        try:
            return await future
        except asyncio.CancelledError:
            check.abandoned = True
            raise

    def preload(self) -> None:
        """Import Pillow on a decode thread, so the first encoded image does not wait for it."""
        self._pool.submit(images.preload)

    def decode_each(self, inputs: Sequence[ImageInput],
                    check: WorkCheck) -> tuple[np.ndarray, tuple[ImageFailure, ...]]:
        """Every image through Pillow (blocking): the decodable ones as uint8 [G, 32, 32, 3]
        and a failure per other image. InvalidInputError when none is decodable."""
        n = len(inputs)
        budget = images.PixelBudget(self.max_request_pixels)
        out = np.empty((n, *contract.INPUT_SHAPE), dtype=np.uint8)
        failed: list[ImageFailure] = []
        for i in range(n):
            check()
            try:  # reading an input may fail too (a door's lazy sequence finds no data)
                out[i - len(failed)] = self._decode_one(inputs[i], budget)
            except InvalidInputError as exc:
                # without its traceback: kept, it would tie this frame (and the request) in a cycle
                failed.append(ImageFailure(i, exc.with_traceback(None)))
        if len(failed) == n:
            raise InvalidInputError(failures_message(failed))
        return out[:n - len(failed)], tuple(failed)

    def _decode_one(self, image: ImageInput, budget: images.PixelBudget) -> np.ndarray:
        if isinstance(image, RawImage):
            pixels = image.height * image.width
            if pixels != contract.IMAGE_SIZE * contract.IMAGE_SIZE and 0 < pixels <= self.max_image_pixels:
                budget.spend(image.width, image.height)  # to be resized by Pillow: the same CPU bound
            return images.from_raw_bytes(image.data, image.height, image.width, image.channels,
                                         self.max_image_pixels)
        if isinstance(image, bytes):
            return images.decode(image, self.max_image_pixels, budget)
        raise InvalidInputError("no data: an image is either encoded bytes or raw pixels")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
