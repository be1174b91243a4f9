"""Turn what a caller holds (paths, bytes, PIL images, numpy arrays) into protobuf images.

Two ways to send a picture, both giving the same answer for the same (lossless) picture:

* ``preprocess=False`` (default): files and bytes travel encoded, as they are, and the
  server decodes them; numpy arrays travel as raw pixels in their own shape.
* ``preprocess=True``: the client runs the one shared preprocessing
  (:mod:`cifar10_core.images`: decode, RGB, BILINEAR resize to 32x32) and sends 32x32x3 raw
  pixels, which saves bandwidth and server CPU on large pictures.

PIL images are always converted locally by :func:`cifar10_core.images.from_pil`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Union

import grpc
import numpy as np

from cifar10_core import images
from cifar10_core.errors import InvalidInputError
from cifar10_protos.cifar10.v2 import classifier_pb2 as pb

from .errors import ClientError

try:  # Pillow is a core dependency, but keep the import cheap and optional here.
    from PIL import Image as _PILImage
except ImportError:  # pragma: no cover
    _PILImage = None

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray, Any]
"""A path, encoded bytes, a PIL image, or a uint8 array (HxW, HxWx1, HxWx3, HxWx4)."""


def _invalid(message: str, item: str | None = None) -> ClientError:
    return ClientError(grpc.StatusCode.INVALID_ARGUMENT, message, item=item)


def read_file(path: str | os.PathLike) -> bytes:
    """The bytes of an image file; a missing or unreadable file is a ClientError."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise _invalid(f"cannot read {os.fspath(path)}: {exc.strerror or exc}", item=os.fspath(path)) from exc


def raw_image(array: np.ndarray) -> pb.Image:
    """A uint8 HxW / HxWxC array as a RawImage message (no resizing)."""
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8:
        dtype = getattr(array, "dtype", type(array).__name__)
        raise _invalid(f"raw image must be a uint8 numpy array, got {dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or 0 in array.shape:
        raise _invalid(f"raw image must have shape HxW, HxWx1, HxWx3 or HxWx4, got {tuple(array.shape)}")
    height, width, channels = array.shape
    return pb.Image(
        raw=pb.RawImage(
            data=np.ascontiguousarray(array).tobytes(), height=height, width=width, channels=channels
        )
    )


def encoded_image(data: bytes, preprocess: bool = False, item: str | None = None) -> pb.Image:
    """Encoded bytes as an Image message: as-is, or decoded locally when ``preprocess``."""
    if not preprocess:
        return pb.Image(encoded=bytes(data))
    try:
        return raw_image(images.decode(bytes(data)))
    except InvalidInputError as exc:
        raise _invalid(str(exc), item=item) from exc


def to_image(value: ImageInput, preprocess: bool = False) -> pb.Image:
    """One caller-side image as a protobuf Image."""
    if isinstance(value, pb.Image):
        return value
    if isinstance(value, (str, os.PathLike)):
        return encoded_image(read_file(value), preprocess, item=os.fspath(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        if len(value) == 0:
            raise _invalid("image bytes are empty")
        return encoded_image(bytes(value), preprocess)
    if isinstance(value, np.ndarray):
        if preprocess:
            try:
                return raw_image(images.from_array(value))
            except InvalidInputError as exc:
                raise _invalid(str(exc)) from exc
        return raw_image(value)
    if _PILImage is not None and isinstance(value, _PILImage.Image):
        try:
            return raw_image(images.from_pil(value))
        except InvalidInputError as exc:
            raise _invalid(str(exc)) from exc
    raise _invalid(
        f"cannot classify a {type(value).__name__}: pass a path, encoded bytes, a PIL image "
        "or a uint8 numpy array (several images: classify_batch)"
    )


def to_images(values: Iterable[ImageInput] | np.ndarray, preprocess: bool = False) -> list[pb.Image]:
    """A batch (a sequence of images, or an NxHxW[xC] uint8 array) as Image messages."""
    if isinstance(values, np.ndarray):
        if values.ndim not in (3, 4):
            raise _invalid(
                f"a batch array must have shape NxHxW or NxHxWxC, got {tuple(values.shape)}"
            )
        return [to_image(values[i], preprocess) for i in range(values.shape[0])]
    if isinstance(values, (str, os.PathLike, bytes, bytearray, memoryview)):
        raise _invalid("a batch must be a sequence of images, not a single image")
    if _PILImage is not None and isinstance(values, _PILImage.Image):
        raise _invalid("a batch must be a sequence of images, not a single image")
    return [to_image(v, preprocess) for v in values]
