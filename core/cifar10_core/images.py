"""The one shared image preprocessing, used by the server and by every client.

Any input becomes a uint8 array of shape (32, 32, 3), RGB, HWC:

1. Encoded bytes are decoded by Pillow, in the formats of ``FORMATS`` only: PNG, JPEG, WebP,
   GIF, BMP, TIFF and PPM (netpbm). Anything else is refused (``ImageDecodeError``,
   INVALID_ARGUMENT) without being parsed: in particular EPS, which Pillow would hand to
   Ghostscript, and the rarely used formats whose parsers see little use (PSD, FITS, ICNS,
   WMF, ...). Only the first frame of an animated image is used. EXIF orientation is applied.
2. The mode is converted to RGB with Pillow's ``Image.convert("RGB")``: grayscale is
   replicated, palette images are expanded, an alpha channel is dropped (not composited).
3. An image that is not 32x32 is resized to exactly 32x32 with Pillow's BILINEAR filter
   (antialiased when shrinking; a shrink beyond 6x reduces first, ``REDUCING_GAP``); the
   aspect ratio is not kept (no crop, no padding), as
   CIFAR-10 pictures are square.

Raw arrays (HxW, HxWx1, HxWx3 or HxWx4 uint8) go through steps 2 and 3, so a client that
sends raw pixels and one that sends a lossless file of the same picture get the same answer.
"""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING

import numpy as np

from cifar10_core.contract import IMAGE_SIZE, INPUT_SHAPE
from cifar10_core.errors import ImageDecodeError, ImageTooLargeError, InvalidInputError

if TYPE_CHECKING:
    from PIL import Image

# Pillow is imported by the functions that use it, not here: a server that gets raw pixels
# never needs it, and its cold start is shorter without it (``preload`` imports it ahead).

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "PPM")
"""The encoded formats accepted (Pillow's names): common picture formats decoded by Pillow
itself or by its bundled libraries, and never by an external program."""
MAX_SIDE = 16384
"""Longest side accepted. Pillow sets up an image row by row while holding the GIL: a
1 x 16,000,000 image would stall every other thread (the event loop) for 0.3 s."""
RESAMPLE = "BILINEAR"
"""The resize filter, a member of Pillow's ``Image.Resampling``."""
REDUCING_GAP = 3.0
"""A shrink by more than 6x first reduces by an integer factor (box filter), then resamples
the last >= 3x: Pillow's documented "indistinguishable from fair resampling in most cases",
and a 1 x 16,000,000 image resizes in a fraction of the time."""
DEFAULT_MAX_PIXELS = 16_000_000
"""Largest decoded image accepted (width * height), a guard against decompression bombs."""


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width > MAX_SIDE or height > MAX_SIDE:
        raise ImageTooLargeError(
            f"image of {width}x{height} has a side over the limit of {MAX_SIDE} pixels"
        )
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image of {width}x{height} = {width * height} pixels exceeds the limit of "
            f"{max_pixels} pixels"
        )


class PixelBudget:
    """Pixels one request may still decode: bounds the CPU time of a request's decoding."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.left = total

    def spend(self, width: int, height: int) -> None:
        """Take ``width * height`` pixels, or ImageTooLargeError (nothing taken)."""
        pixels = width * height
        if pixels > self.left:
            raise ImageTooLargeError(
                f"image of {width}x{height} = {pixels} pixels exceeds what is left of the "
                f"request's decoding budget ({self.left} of {self.total} pixels)"
            )
        self.left -= pixels


_preloaded = False


def preload() -> None:
    """Import Pillow and the plugins of ``FORMATS`` now (a server does it on a decode thread
    after start), so that the first encoded image does not pay for the imports. With these
    registered, ``Image.open(..., formats=FORMATS)`` never imports Pillow's other plugins."""
    global _preloaded
    if _preloaded:  # decode() calls this for every image: once is enough
        return
    from PIL import Image, ImageOps, TiffImagePlugin, WebPImagePlugin  # noqa: F401

    Image.preinit()  # BMP, GIF, JPEG, PPM, PNG
    _preloaded = True


def _to_model_input(image: Image.Image) -> np.ndarray:
    from PIL import Image

    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling[RESAMPLE],
                             reducing_gap=REDUCING_GAP)
    return np.asarray(image, dtype=np.uint8)


def from_pil(image: Image.Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A PIL image as a (32, 32, 3) uint8 RGB array."""
    _check_pixels(image.width, image.height, max_pixels)
    return _to_model_input(image)


def decode(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, budget: PixelBudget | None = None
) -> np.ndarray:
    """Encoded image bytes (one of ``FORMATS``) as a (32, 32, 3) uint8 RGB array.

    Raises ImageDecodeError for empty, unknown, refused or truncated data and
    ImageTooLargeError before decoding pixels when the header announces more than
    ``max_pixels`` (or more than is left of ``budget``).
    """
    if not data:
        raise ImageDecodeError("image bytes are empty")
    from PIL import Image, ImageOps

    preload()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            _check_pixels(image.width, image.height, max_pixels)
            if budget is not None:
                budget.spend(image.width, image.height)
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # no 48 MB copy of a big image
    except InvalidInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"image rejected as a decompression bomb: {exc}") from exc
    except Image.UnidentifiedImageError:
        raise ImageDecodeError(
            f"cannot decode image ({len(data)} bytes): not one of the accepted formats "
            f"({', '.join(FORMATS)})"
        ) from None
    except Exception as exc:  # Pillow raises many types for bad data
        raise ImageDecodeError(f"cannot decode image ({len(data)} bytes): {exc}") from exc
    return _to_model_input(image)


def from_array(array: np.ndarray, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A raw uint8 HxW, HxWx1, HxWx3 or HxWx4 array as a (32, 32, 3) uint8 RGB array."""
    if array.dtype != np.uint8:
        raise InvalidInputError(f"raw image must be uint8, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InvalidInputError(
            f"raw image must have shape HxW, HxWx1, HxWx3 or HxWx4, got {tuple(array.shape)}"
        )
    height, width = array.shape[:2]
    if height == 0 or width == 0:
        raise InvalidInputError(f"raw image has an empty side: {tuple(array.shape)}")
    _check_pixels(width, height, max_pixels)
    if array.shape == INPUT_SHAPE:
        return np.ascontiguousarray(array)
    from PIL import Image

    return _to_model_input(Image.fromarray(np.ascontiguousarray(array)))


def from_raw_bytes(
    data: bytes, height: int, width: int, channels: int, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Raw HWC uint8 bytes with their declared shape, checked, as a (32, 32, 3) array."""
    if height <= 0 or width <= 0 or channels not in (1, 3, 4):
        raise InvalidInputError(
            f"raw image shape must be height>0, width>0, channels in (1, 3, 4); "
            f"got {height}x{width}x{channels}"
        )
    _check_pixels(width, height, max_pixels)
    expected = height * width * channels
    if len(data) != expected:
        raise InvalidInputError(
            f"raw image of {height}x{width}x{channels} needs {expected} bytes, got {len(data)}"
        )
    array = np.frombuffer(data, dtype=np.uint8).reshape(height, width, channels)
    return from_array(array, max_pixels)
