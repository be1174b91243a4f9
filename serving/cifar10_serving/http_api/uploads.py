"""The three bodies ``POST /v1/classify`` takes, read into encoded images.

* ``image/*`` or ``application/octet-stream`` (or no ``Content-Type``): the body is one image;
* ``multipart/form-data``: every file part is an image (any field name), with its filename;
* ``application/json``: ``{"images": ["<base64 or a data: URL>", ...], "top_k": 3}``.

What cannot be read as one of them is refused naming the problem (``HttpError``; base64 by
``cifar10_serving.http_api.base64_images``): 415 for another media type, 400 for a malformed
body (JSON, multipart, base64). Whether the images decode is the data plane's business,
image by image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from cifar10_core.errors import quoted
from cifar10_serving.http_api import base64_images
from cifar10_serving.http_api.errors import HttpError

RAW_TYPES = ("image/*", "application/octet-stream")
MULTIPART_TYPE = "multipart/form-data"
JSON_TYPE = "application/json"
ACCEPTED = ", ".join((*RAW_TYPES, MULTIPART_TYPE, JSON_TYPE))
JSON_KEYS = ("images", "top_k")


@dataclass(frozen=True, slots=True)
class Upload:
    """The body's images (encoded bytes, in order), each one's filename (multipart only,
    else None), and the ``top_k`` a JSON body names (None: not named)."""

    images: list[bytes]
    filenames: list[str | None]
    top_k: int | None = None


def read_upload(content_type: str | None, body: bytes) -> Upload:
    """The images of a body sent with ``content_type``; HttpError when it cannot be read."""
    media, params = parse_options_header(content_type)
    kind = media.decode("latin-1")
    if not kind or kind == "application/octet-stream" or kind.startswith("image/"):
        if not body:
            raise HttpError(400, "the body is empty: send the bytes of an image")
        return Upload([body], [None])
    if kind == MULTIPART_TYPE:
        return _multipart(body, params.get(b"boundary", b""))
    if kind == JSON_TYPE or kind.endswith("+json"):
        return _json(body)
    raise HttpError(415, f"unsupported Content-Type {quoted(kind)}: send one image as image/* or "
                         f"application/octet-stream, files as {MULTIPART_TYPE}, or {JSON_TYPE} "
                         '{"images": ["<base64>", ...]}', {"Accept-Post": ACCEPTED})


@dataclass(slots=True)
class _Part:
    headers: dict[bytes, bytes]
    data: bytearray


def _multipart(body: bytes, boundary: bytes) -> Upload:
    if not boundary:
        raise HttpError(400, f"{MULTIPART_TYPE} without a boundary parameter in its Content-Type")
    parts: list[_Part] = []
    header = [b"", b""]  # the name and value of the header being read

    def begin() -> None:
        parts.append(_Part({}, bytearray()))

    def header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def header_end() -> None:
        parts[-1].headers[header[0].strip().lower()] = header[1].strip()
        header[:] = [b"", b""]

    def part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].data += data[start:end]

    parser = MultipartParser(boundary, {
        "on_part_begin": begin, "on_header_field": header_field, "on_header_value": header_value,
        "on_header_end": header_end, "on_part_data": part_data,
    })
    try:
        parser.write(body)
    except FormParserError as exc:
        raise HttpError(400, f"malformed {MULTIPART_TYPE} body: {exc}") from None
    if parser.state != MultipartState.END:
        raise HttpError(400, f"malformed {MULTIPART_TYPE} body: it ends before its closing "
                             f"boundary (--{boundary.decode('latin-1')}--)")
    images, filenames = [], []
    for part in parts:
        _, options = parse_options_header(part.headers.get(b"content-disposition", b""))
        if b"filename" not in options:
            name = options.get(b"name", b"").decode("utf-8", "replace")
            raise HttpError(400, f"form field {quoted(name)} is not a file: send each image as a "
                                 "file part (curl -F images=@cat.jpg); top_k, model and version "
                                 "go in the query string")
        images.append(bytes(part.data))
        filenames.append(options[b"filename"].decode("utf-8", "replace"))
    if not images:
        raise HttpError(400, f"the {MULTIPART_TYPE} body holds no file part: no image to classify")
    return Upload(images, filenames)


def _json(body: bytes) -> Upload:
    try:
        document = json.loads(body)
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8/16/32
        raise HttpError(400, f"malformed JSON body: {exc}") from None
    if not isinstance(document, dict):
        raise HttpError(400, 'the JSON body must be an object {"images": [...]}')
    unknown = sorted(set(document) - set(JSON_KEYS))
    if unknown:
        raise HttpError(400, f"unknown key {quoted(unknown[0])} in the JSON body (it takes "
                             f"{', '.join(JSON_KEYS)}; model and version go in the query string)")
    images = document.get("images")
    if not isinstance(images, list) or not images:
        raise HttpError(400, '"images" must be a list of one or more base64 strings or data: URLs')
    top_k = document.get("top_k")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool)):
        raise HttpError(400, f'"top_k" must be an integer, got {quoted(json.dumps(top_k))}')
    decoded = [base64_images.decode(text, f"images[{i}]") for i, text in enumerate(images)]
    return Upload(decoded, [None] * len(decoded), top_k)
