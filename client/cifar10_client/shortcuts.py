"""``classify`` and ``classify_batch``, the same for every client: each builds the images and
calls the client's own ``classify_images`` (gRPC or HTTP, sync or asyncio)."""

from __future__ import annotations

from collections.abc import Iterable

from .results import Classification
from .inputs import ImageInput


class ClassifyShortcuts:
    """For the sync clients (``Client``, ``HttpClient``)."""

    def classify(
        self,
        image: ImageInput,
        *,
        top_k: int = 1,
        timeout: float | None = None,
        preprocess: bool | None = None,
        model_name: str = "",
        model_version: str = "",
    ) -> Classification:
        """Classify one image (a path, encoded bytes, a PIL image or a uint8 array)."""
        results = self.classify_images(
            [self._image(image, preprocess)], top_k=top_k, timeout=timeout,
            model_name=model_name, model_version=model_version,
        )
        return results[0]

    def classify_batch(
        self,
        images: Iterable[ImageInput],
        *,
        top_k: int = 1,
        timeout: float | None = None,
        preprocess: bool | None = None,
        model_name: str = "",
        model_version: str = "",
    ) -> list[Classification]:
        """Classify a batch: a sequence of images or an NxHxW[xC] uint8 array."""
        return self.classify_images(
            self._images(images, preprocess), top_k=top_k, timeout=timeout,
            model_name=model_name, model_version=model_version,
        )


class AsyncClassifyShortcuts:
    """For the asyncio clients (``AsyncClient``, ``AsyncHttpClient``)."""

    async def classify(
        self,
        image: ImageInput,
        *,
        top_k: int = 1,
        timeout: float | None = None,
        preprocess: bool | None = None,
        model_name: str = "",
        model_version: str = "",
    ) -> Classification:
        """Classify one image (a path, encoded bytes, a PIL image or a uint8 array)."""
        results = await self.classify_images(
            [self._image(image, preprocess)], top_k=top_k, timeout=timeout,
            model_name=model_name, model_version=model_version,
        )
        return results[0]

    async def classify_batch(
        self,
        images: Iterable[ImageInput],
        *,
        top_k: int = 1,
        timeout: float | None = None,
        preprocess: bool | None = None,
        model_name: str = "",
        model_version: str = "",
    ) -> list[Classification]:
        """Classify a batch: a sequence of images or an NxHxW[xC] uint8 array."""
        return await self.classify_images(
            self._images(images, preprocess), top_k=top_k, timeout=timeout,
            model_name=model_name, model_version=model_version,
        )
