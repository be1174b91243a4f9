"""Triton's repository extension over REST (``--model-control explicit`` only), as Triton
serves it:

* ``POST /v2/repository/index``, body ``{"ready": true}`` or none: the repository's models
  ``[{"name", "version", "state", "reason"}]``;
* ``POST /v2/repository/models/{model}/load``: serve the model (again), its changed files
  loaded afresh; ``.../unload``: stop serving it. Both answer ``{}``.

The same calls as the gRPC ones (``cifar10_serving.inference_protocol.repository``); a
model not in the repository is 404, a body that is not a JSON object 400.
"""

from __future__ import annotations

import json

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cifar10_serving.http_api.api_docs import error_responses
from cifar10_serving.http_api.calls import Call
from cifar10_serving.http_api.context import Context
from cifar10_serving.http_api.errors import HttpError
from cifar10_serving.inference_protocol import repository


async def _json_object(call: Call) -> dict:
    """The request's JSON object body; ``{}`` for an empty body."""
    body = await call.body()
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise HttpError(400, f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise HttpError(400, "the body must be a JSON object")
    return value


def router(context: Context) -> APIRouter:
    routes = APIRouter(tags=["Model repository (Triton)"])
    calls = context.calls
    models = context.plane.models

    @routes.post("/v2/repository/index", summary="The repository's models and their state",
                 responses={200: {"description": "[{name, version, state, reason}]"},
                            **error_responses(400)})
    async def index(request: Request) -> Response:
        async def work(call: Call) -> Response:
            body = await _json_object(call)
            ready = body.get("ready", False)
            if not isinstance(ready, bool):
                raise HttpError(400, "ready must be true or false")
            return JSONResponse(await repository.index(
                models, str(body.get("repository_name", "")), ready))
        return await calls.run("RepositoryIndex", request, work)

    @routes.post("/v2/repository/models/{model_name}/load", summary="Load a model",
                 responses={200: {"description": "served"}, **error_responses(400, 404, 503)})
    async def load(request: Request, model_name: str) -> Response:
        async def work(call: Call) -> Response:
            body = await _json_object(call)
            await repository.load(models, model_name, parameters=body.get("parameters") or {})
            return JSONResponse({})
        return await calls.run("RepositoryModelLoad", request, work)

    @routes.post("/v2/repository/models/{model_name}/unload", summary="Unload a model",
                 responses={200: {"description": "no longer served"}, **error_responses(400, 404)})
    async def unload(request: Request, model_name: str) -> Response:
        async def work(call: Call) -> Response:
            body = await _json_object(call)
            await repository.unload(models, model_name, parameters=body.get("parameters") or {})
            return JSONResponse({})
        return await calls.run("RepositoryModelUnload", request, work)

    return routes
