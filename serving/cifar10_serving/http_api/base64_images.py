"""Encoded images carried as text in JSON: base64, or a ``data:`` URL.

Used by the image endpoint's JSON body (``cifar10_serving.http_api.uploads``) and by the
Open Inference Protocol's BYTES tensors in JSON (``cifar10_serving.http_api.oip_json``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from urllib.parse import unquote_to_bytes

from cifar10_core.errors import InvalidInputError

_URL_SAFE = bytes.maketrans(b"-_", b"+/")


def decode(text: object, where: str) -> bytes:
    """An image string's bytes: a data: URL, or base64 (standard or URL-safe alphabet, line
    breaks and missing padding allowed, as encoders differ in them). InvalidInputError
    naming ``where`` the string was when it is not one."""
    if not isinstance(text, str):
        raise InvalidInputError(f"{where} must be a string (base64 or a data: URL), got "
                                f"{type(text).__name__}")
    if text.startswith("data:"):
        meta, comma, payload = text[5:].partition(",")
        if not comma:
            raise InvalidInputError(f"{where} is a data: URL without a comma before its data")
        if not meta.endswith(";base64"):
            return unquote_to_bytes(payload)
        text = payload
    try:
        data = "".join(text.split()).encode("ascii").translate(_URL_SAFE)
        return base64.b64decode(data + b"=" * (-len(data) % 4), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise InvalidInputError(f"{where} is not valid base64 ({exc})") from None


class Base64Images(Sequence):
    """Strings as the data plane's encoded images, each decoded when the data plane reads
    it (on a decode thread, not on the event loop): one that is not base64 fails alone."""

    def __init__(self, texts: Sequence[str]) -> None:
        self._texts = texts

    def __len__(self) -> int:
        return len(self._texts)

    def __getitem__(self, i: int) -> bytes:
        return decode(self._texts[i], "the string")
