"""The Open Inference Protocol's REST API (KServe v2) under ``/v2``: a thin adapter over the
data plane, with the same models and semantics as the gRPC one
(``cifar10_serving.grpc_api.inference``; both from ``cifar10_serving.inference_protocol``).

* ``GET /v2``: server metadata; ``/v2/health/live``, ``/v2/health/ready``;
* ``GET /v2/models/{model}[/versions/{version}]``: model metadata (with the model's own
  metadata, its training figures included, as ``parameters``), ``.../ready``, ``.../config``
  (Triton's model configuration), ``.../stats`` and ``/v2/models/stats`` (Triton's
  statistics);
* ``POST /v2/models/{model}[/versions/{version}]/infer``: JSON tensors or Triton's binary
  tensor data extension, the classification extension (``cifar10_serving.http_api.oip_json``).

A model or version not served is 404, naming what is served; a request with a compressed
body (``Content-Encoding``) is 415.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cifar10_serving.dataplane.request import Conversion, InferenceRequest
from cifar10_serving.http_api import oip_schemas as schemas
from cifar10_serving.http_api.api_docs import error_responses
from cifar10_serving.http_api.calls import Call
from cifar10_serving.http_api.context import Context
from cifar10_serving.http_api.errors import HttpError
from cifar10_serving.http_api.oip_json import (
    BINARY_TYPE,
    HEADER_LENGTH,
    JSON_TYPE,
    InferBody,
    encode_response,
    header_length,
)
from cifar10_serving.inference_protocol import descriptions
from cifar10_serving.inference_protocol.statistics import record_failure
from cifar10_serving.inference_protocol.tensors import every_row

MODEL = "/v2/models/{model_name}"
VERSION = "/v2/models/{model_name}/versions/{model_version}"
ModelWork = Callable[[Call, str, str], Awaitable[Response]]

_INFER_BODY = {
    "required": True,
    "description": "A JSON inference request; with the binary tensor data extension, the "
                   "JSON (its length in the Inference-Header-Content-Length header) followed "
                   "by the tensors' bytes.",
    "content": {
        JSON_TYPE: {
            "schema": {"type": "object", "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "inputs": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "datatype": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer"}},
                    "parameters": {"type": "object"}, "data": {"type": "array", "items": {}}}}},
                "outputs": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "parameters": {"type": "object"}}}},
            }},
            "example": {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                                    "data": ["<an image file in base64>"]}],
                        "outputs": [{"name": "probabilities",
                                     "parameters": {"classification": 3}}]},
        },
        BINARY_TYPE: {"schema": {"type": "string", "format": "binary"}},
    },
}


def router(context: Context) -> APIRouter:
    routes = APIRouter(tags=["Open Inference Protocol"])
    calls = context.calls
    plane = context.plane
    statistics = context.statistics

    def for_model(path: str, method: str, name: str, summary: str, work: ModelWork,
                  **options) -> None:
        """``work(call, model, version)`` at ``/v2/models/{model}`` + ``path`` and at
        ``/v2/models/{model}/versions/{version}`` + ``path``."""
        async def latest(request: Request, model_name: str) -> Response:
            return await calls.run(name, request, lambda call: work(call, model_name, ""))

        async def versioned(request: Request, model_name: str, model_version: str) -> Response:
            return await calls.run(name, request,
                                   lambda call: work(call, model_name, model_version))

        routes.add_api_route(MODEL + path, latest, methods=[method], summary=summary, **options)
        routes.add_api_route(VERSION + path, versioned, methods=[method],
                             summary=f"{summary} (one version)", **options)

    @routes.get("/v2", summary="Server metadata",
                responses={200: {"model": schemas.ServerMetadata, "description": "the server"}})
    async def server_metadata(request: Request) -> Response:
        async def work(_call: Call) -> Response:
            return JSONResponse(descriptions.server_metadata(
                plane.models.default.version, context.settings.repository_api))
        return await calls.run("ServerMetadata", request, work)

    @routes.get("/v2/health/live", summary="Server live",
                responses={200: {"model": schemas.Live, "description": "the process answers"}})
    async def server_live(request: Request) -> Response:
        async def work(_call: Call) -> Response:
            return JSONResponse({"live": True})
        return await calls.run("ServerLive", request, work)

    @routes.get("/v2/health/ready", summary="Server ready",
                responses={200: {"model": schemas.Ready, "description": "serving"},
                           503: {"model": schemas.Ready,
                                 "description": "not ready (starting or shutting down)"}})
    async def server_ready(request: Request) -> Response:
        async def work(_call: Call) -> Response:
            return JSONResponse({"ready": plane.ready}, status_code=200 if plane.ready else 503)
        return await calls.run("ServerReady", request, work)

    @routes.get("/v2/models/stats", summary="Statistics of every model (Triton)",
                responses={200: {"model": schemas.ModelStatistics, "description": "statistics"}})
    async def all_statistics(request: Request) -> Response:
        async def work(_call: Call) -> Response:
            return JSONResponse({"model_stats": [
                statistics.model_stats(info.name, info.version) for info in plane.models.infos()]})
        return await calls.run("ModelStatistics", request, work)

    async def model_metadata(_call: Call, name: str, version: str) -> Response:
        info = plane.models.select(name, version).info
        versions = [i.version for i in plane.models.matching(info.name, version)]
        return JSONResponse({**descriptions.model_metadata(info, versions),
                             "parameters": dict(info.metadata)})

    async def model_ready(_call: Call, name: str, version: str) -> Response:
        info = plane.models.select(name, version).info
        return JSONResponse({"name": info.name, "ready": plane.ready},
                            status_code=200 if plane.ready else 503)

    async def model_config(_call: Call, name: str, version: str) -> Response:
        model = plane.models.select(name, version)
        return JSONResponse(descriptions.model_config(model.info, plane.limits,
                                                      plane.batching_of(model)))

    async def model_statistics(_call: Call, name: str, version: str) -> Response:
        return JSONResponse({"model_stats": [statistics.model_stats(i.name, i.version)
                                             for i in plane.models.matching(name, version)]})

    async def model_infer(call: Call, name: str, version: str) -> Response:
        plane.models.select(name, version)  # an unknown model is 404 whatever the body
        request = call.request
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            raise HttpError(415, f"Content-Encoding {encoding!r} is not accepted: send the "
                                 f"body uncompressed")
        body = await call.body()
        started, images = time.perf_counter_ns(), 0
        try:
            parsed = InferBody(body, header_length(request.headers.get(HEADER_LENGTH), len(body)),
                               plane.limits.max_images_per_request)
            result = await plane.infer(InferenceRequest(
                Conversion(parsed.convert, parsed.cheap), name, version, call.deadline,
                call.request_id, len(body)))
            probabilities = every_row(result)
            images = len(probabilities)
            content, json_length = encode_response(probabilities, parsed.call, result.model)
        except BaseException:
            record_failure(statistics, plane, name, version, images, started)
            raise
        statistics.record(True, images, started, result.model.name, result.model.version)
        if json_length is None:
            return Response(content, media_type=JSON_TYPE)
        return Response(content, media_type=BINARY_TYPE, headers={HEADER_LENGTH: str(json_length)})

    def answers(model: type, description: str, *errors: int) -> dict:
        return {200: {"model": model, "description": description}, **error_responses(404, *errors)}

    for_model("", "GET", "ModelMetadata", "Model metadata", model_metadata,
              responses=answers(schemas.ModelMetadata, "the model's tensors and metadata"))
    for_model("/ready", "GET", "ModelReady", "Model ready", model_ready, responses={
        **answers(schemas.ModelReady, "serving"),
        503: {"model": schemas.ModelReady, "description": "not ready (shutting down)"}})
    for_model("/config", "GET", "ModelConfig", "Model configuration (Triton)", model_config,
              responses=answers(schemas.ModelConfig, "the configuration"))
    for_model("/stats", "GET", "ModelStatistics", "Model statistics (Triton)", model_statistics,
              responses=answers(schemas.ModelStatistics, "the statistics"))
    infer_answers = answers(schemas.InferAnswer, "the output: JSON, or with binary data the "
                            "JSON (its length in Inference-Header-Content-Length) and the "
                            "tensor's bytes", 400, 413, 415, 429, 503, 504)
    infer_answers[200]["content"] = {
        BINARY_TYPE: {"schema": {"type": "string", "format": "binary"}}}
    for_model("/infer", "POST", "ModelInfer", "Inference", model_infer,
              openapi_extra={"requestBody": _INFER_BODY}, responses=infer_answers)
    return routes
