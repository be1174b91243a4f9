"""The API for people under ``/v1``: ``POST /v1/classify`` (images in, each one's labels and
probabilities out, as JSON), ``GET /v1/model`` (a model served and its accuracy) and
``GET /v1/models`` (every model version served).

Classify has gRPC Classify's semantics (``cifar10_serving.grpc_api.classifier``): encoded
images of any size go to the data plane as they are, to be decoded and resized there; an
image that does not decode fails alone (an ``error`` in its result) and the others are
classified; a request with no image that could be read fails as a whole (400). The bodies it
takes are read in ``cifar10_serving.http_api.uploads``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cifar10_core import contract
from cifar10_core.errors import quoted
from cifar10_serving.dataplane.request import InferenceRequest, InferenceResult
from cifar10_serving.grpc_api.classifier import top_indices
from cifar10_serving.http_api.api_docs import error_responses
from cifar10_serving.http_api.calls import Call
from cifar10_serving.http_api.context import Context
from cifar10_serving.http_api.errors import HttpError
from cifar10_serving.http_api.uploads import JSON_TYPE, MULTIPART_TYPE, read_upload
from cifar10_serving.onnx_model import ModelInfo

DEFAULT_TOP_K = 3
OFFLOAD_BYTES = 1 << 20
"""Bodies larger than this are read (JSON, base64, multipart) on a worker thread, so that the
event loop answers other calls meanwhile."""


class TopClass(BaseModel):
    label: str = Field(examples=["cat"])
    probability: float = Field(examples=[0.92])


class ImageResult(BaseModel):
    """One image's answer: its classes, or the error that kept it from being classified."""

    index: int = Field(description="the image's place in the request, from 0")
    filename: str | None = Field(description="the file part's filename (multipart only)")
    label: str | None = Field(None, description="the most probable class")
    probability: float | None = Field(None, description="its probability")
    probabilities: list[float] | None = Field(None, description="all 10, in the order of `labels`")
    top: list[TopClass] | None = Field(None, description="the top_k most probable classes, best first")
    error: str | None = Field(None, description="why this image was not classified (the others were)",
                              examples=["cannot decode image: cannot identify image file"])


class ModelName(BaseModel):
    name: str = Field(examples=["cifar10-cnn"])
    version: str = Field(examples=["2026.12.01-1644-e085"])


class ClassifyAnswer(BaseModel):
    model: ModelName
    request_id: str = Field(description="the X-Request-Id header, else one made up")
    labels: list[str] = Field(examples=[list(contract.CLASS_NAMES)])
    results: list[ImageResult]


class Accuracy(BaseModel):
    accuracy: float = Field(examples=[0.858])
    images: int = Field(examples=[2500])


class ModelAnswer(BaseModel):
    name: str = Field(examples=["cifar10-cnn"])
    version: str = Field(examples=["2026.12.01-1644-e085"])
    labels: list[str] = Field(examples=[list(contract.CLASS_NAMES)])
    created: str | None = Field(description="when training exported it (UTC)")
    dataset: str | None = Field(description="the data it was trained on")
    accuracy: dict[str, Accuracy] = Field(
        description="from the model's metadata: `validation` (the part that chose the epoch) "
                    "and `test` (held out from every choice), where the model carries them")


class ModelList(BaseModel):
    default_model: str = Field(description="the model of requests that name none")
    models: list[ModelAnswer]


_BINARY = {"type": "string", "format": "binary"}
_MODEL_PARAMETERS = [
    {"name": "model", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "the model's name (default: the model served)"},
    {"name": "version", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "its version (default: the newest)"},
]
_CLASSIFY_OPENAPI = {
    "parameters": [
        {"name": "top_k", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": contract.NUM_CLASSES,
                    "default": DEFAULT_TOP_K},
         "description": "how many classes each image's `top` lists"},
        *_MODEL_PARAMETERS,
    ],
    "requestBody": {
        "required": True,
        "description": "One image as the raw body; or files as multipart/form-data (any field "
                       "name); or JSON with base64 strings or data: URLs. PNG, JPEG, WebP, GIF, "
                       "BMP, TIFF or PPM of any size, resized to 32x32 by the server.",
        "content": {
            "image/*": {"schema": _BINARY},
            "application/octet-stream": {"schema": _BINARY},
            MULTIPART_TYPE: {"schema": {
                "type": "object", "required": ["images"],
                "properties": {"images": {"type": "array", "items": _BINARY,
                                          "description": "one or more image files"}}}},
            JSON_TYPE: {
                "schema": {
                    "type": "object", "required": ["images"], "additionalProperties": False,
                    "properties": {
                        "images": {"type": "array", "minItems": 1, "items": {"type": "string"},
                                   "description": "each image's bytes in base64, or a data: URL"},
                        "top_k": {"type": "integer", "minimum": 1, "maximum": contract.NUM_CLASSES,
                                  "description": "overrides the query's top_k"},
                    },
                },
                "example": {"images": ["data:image/png;base64,iVBORw0KGgo..."], "top_k": 3},
            },
        },
    },
}


def router(context: Context) -> APIRouter:
    routes = APIRouter(tags=["Images"])
    calls = context.calls
    plane = context.plane

    @routes.post(
        "/v1/classify", summary="Classify images",
        description="The images' classes: for each image its most probable label, all ten "
                    "probabilities and the `top_k` best, or the error that kept it from being "
                    "classified (the others still are). `curl --data-binary @cat.jpg -H "
                    "'Content-Type: image/jpeg' localhost:8501/v1/classify`",
        openapi_extra=_CLASSIFY_OPENAPI,
        responses={200: {"model": ClassifyAnswer, "description": "each image's classes or error"},
                   **error_responses(400, 404, 413, 415, 429, 503, 504)},
    )
    async def classify(request: Request) -> Response:
        async def work(call: Call) -> Response:
            query = request.query_params
            top_k = _top_k(query.get("top_k", str(DEFAULT_TOP_K)))
            body = await call.body()
            content_type = request.headers.get("content-type")
            upload = (read_upload(content_type, body) if len(body) <= OFFLOAD_BYTES
                      else await asyncio.to_thread(read_upload, content_type, body))
            if upload.top_k is not None:
                top_k = _top_k(str(upload.top_k))
            result = await plane.infer(InferenceRequest(
                upload.images, query.get("model", ""), query.get("version", ""), call.deadline,
                call.request_id, len(body)))
            return JSONResponse(classify_answer(result, top_k, upload.filenames, call.request_id))
        return await calls.run("Classify", request, work)

    @routes.get(
        "/v1/model", summary="The model served",
        description="Its name, version, labels, and its accuracy from its metadata.",
        openapi_extra={"parameters": _MODEL_PARAMETERS},
        responses={200: {"model": ModelAnswer, "description": "the model"},
                   **error_responses(404)},
    )
    async def model(request: Request) -> Response:
        async def work(_call: Call) -> Response:
            query = request.query_params
            info = plane.models.select(query.get("model", ""), query.get("version", "")).info
            return JSONResponse(model_answer(info))
        return await calls.run("GetModelInfo", request, work)

    @routes.get(
        "/v1/models", summary="Every model version served",
        description="The default model (of requests that name none), and each model version "
                    "served as `/v1/model` describes it, by name, newest version first.",
        responses={200: {"model": ModelList, "description": "the models"}},
    )
    async def models(request: Request) -> Response:
        async def work(_call: Call) -> Response:
            return JSONResponse({"default_model": plane.models.default.name,
                                 "models": [model_answer(i) for i in plane.models.infos()]})
        return await calls.run("ListModels", request, work)

    return routes


def _top_k(raw: str) -> int:
    try:
        top_k = int(raw)
    except ValueError:
        top_k = 0
    if not 1 <= top_k <= contract.NUM_CLASSES:
        raise HttpError(400, f"top_k must be an integer from 1 to {contract.NUM_CLASSES}, "
                             f"got {quoted(raw)}")
    return top_k


def _floats(row: np.ndarray) -> list[float]:
    """float32 values as the shortest decimals that read back as the same float32 (0.92, not
    0.9200000166893005)."""
    return [float(str(value)) for value in row]


def classify_answer(result: InferenceResult, top_k: int, filenames: Sequence[str | None],
                    request_id: str) -> dict:
    """The JSON answer: a result per image in request order, classes or an error."""
    labels = result.model.labels
    failed = {failure.index: str(failure.error) for failure in result.failures}
    top = top_indices(result.probabilities, top_k)
    results, row = [], 0
    for index, filename in enumerate(filenames):
        if index in failed:
            results.append({"index": index, "filename": filename, "error": failed[index]})
            continue
        probabilities = _floats(result.probabilities[row])
        best = [{"label": labels[i], "probability": probabilities[i]}
                for i in top[row * top_k:(row + 1) * top_k]]
        results.append({"index": index, "filename": filename, "label": best[0]["label"],
                        "probability": best[0]["probability"], "probabilities": probabilities,
                        "top": best})
        row += 1
    return {"model": {"name": result.model.name, "version": result.model.version},
            "request_id": request_id, "labels": list(labels), "results": results}


def model_answer(info: ModelInfo) -> dict:
    metadata = info.metadata
    accuracy = {}
    for part, key, figure, count in (
            ("validation", contract.META_VALIDATION_METRICS, "val_accuracy", "val_images"),
            ("test", contract.META_TEST_METRICS, "test_accuracy", "test_images")):
        try:
            metrics = json.loads(metadata[key])
            accuracy[part] = {"accuracy": float(metrics[figure]), "images": int(metrics[count])}
        except (KeyError, TypeError, ValueError):
            continue  # a model made before that figure existed, or without it
    return {"name": info.name, "version": info.version, "labels": list(info.labels),
            "created": metadata.get(contract.META_CREATED), "dataset": metadata.get(contract.META_DATASET),
            "accuracy": accuracy}
