"""The HTTP door's API for people under ``/v1``, as the HTTP client uses it:

* ``POST /v1/classify``: encoded images out as one ``multipart/form-data`` body, its JSON
  answer back as one Classification or ClientError per image (``results``, in request order);
* ``GET /v1/model``: the served model's name, version and labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
import httpx
import numpy as np

from .errors import ClientError
from .messages import Outcome
from .results import Classification

CLASSIFY_PATH = "/v1/classify"
MODEL_PATH = "/v1/model"
MODELS_PATH = "/v1/models"
FIELD = "images"


def query(top_k: int, model_name: str, model_version: str) -> dict[str, str]:
    """The query string: ``top_k`` (the endpoint takes 1..10), the model when named."""
    params = {"top_k": str(max(1, int(top_k)))}
    if model_name:
        params["model"] = model_name
    if model_version:
        params["version"] = model_version
    return params


def multipart(images: Sequence[bytes]) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a ``multipart/form-data`` request holding the images as files
    (named by position: answers come by index). httpx encodes it; read into one bytes object,
    it goes out in one write (streamed, it is several small ones per image) and each retry
    reuses it."""
    parts = [(FIELD, (f"image-{i}", data, "application/octet-stream")) for i, data in enumerate(images)]
    request = httpx.Request("POST", CLASSIFY_PATH, files=parts)
    return request.read(), {"Content-Type": request.headers["Content-Type"]}


def _malformed(message: str) -> ClientError:
    return ClientError(grpc.StatusCode.INTERNAL, f"malformed response: {message}", attempts=1)


def outcomes(answer: Any, count: int) -> list[Outcome]:
    """One Classification or ClientError (``item``: the image's index) per image of a request
    of ``count`` images; ClientError INTERNAL when the answer does not fit that request."""
    try:
        model, labels, results = answer["model"], tuple(answer["labels"]), answer["results"]
        name, version = str(model["name"]), str(model["version"])
    except (KeyError, TypeError) as exc:
        raise _malformed(f"no {exc}") from None
    if not isinstance(results, list) or len(results) != count:
        raise _malformed(f"{len(results) if isinstance(results, list) else 'no'} results for {count} images")
    position = {label: i for i, label in enumerate(labels)}
    out: list[Outcome] = []
    for i, result in enumerate(results):
        try:
            if result.get("index", i) != i:
                raise ValueError(f"index {result['index']} in place {i}")
            if result.get("error") is not None:
                out.append(ClientError(grpc.StatusCode.INVALID_ARGUMENT, str(result["error"]), attempts=1,
                                       item=str(i)))
                continue
            # The answer holds each float32 as its shortest decimal: back to that float32,
            # so that both transports give the same values.
            probabilities = tuple(np.asarray(result["probabilities"], dtype=np.float32).tolist())
            top = [position[score["label"]] for score in result["top"]]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _malformed(f"result {i}: {exc!r}") from None
        if len(probabilities) != len(labels) or not top:
            raise _malformed(f"result {i}: {len(probabilities)} probabilities and {len(top)} top "
                             f"classes for {len(labels)} labels")
        out.append(Classification.from_row(probabilities, top, labels, name, version))
    return out


def models_of(answer: Any) -> tuple[str, list[tuple[str, str, tuple[str, ...]]]]:
    """``(default model, [(name, version, labels)])`` of a ``/v1/models`` answer."""
    try:
        return str(answer["default_model"]), [model_of(m) for m in answer["models"]]
    except (KeyError, TypeError) as exc:
        raise _malformed(f"models answer without {exc}") from None


def model_of(answer: Any) -> tuple[str, str, tuple[str, ...]]:
    """``(name, version, labels)`` of a ``/v1/model`` answer."""
    try:
        return str(answer["name"]), str(answer["version"]), tuple(str(label) for label in answer["labels"])
    except (KeyError, TypeError) as exc:
        raise _malformed(f"model answer without {exc}") from None
