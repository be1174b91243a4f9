"""The Open Inference Protocol's REST API (KServe v2) under ``/v2``: a thin adapter over the
data plane, with the same models and semantics as the gRPC one
(``cifar10_serving.grpc_api.inference``)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cifar10_serving.http_api.context import Context
from cifar10_serving.http_api.calls import Call


def router(context: Context) -> APIRouter:
    routes = APIRouter(tags=["Open Inference Protocol"])
    calls = context.calls
    plane = context.plane

    @routes.get("/v2/health/live", summary="Server live")
    async def server_live(request: Request) -> Response:
        async def work(_call: Call) -> Response:
            return JSONResponse({"live": True})
        return await calls.run("ServerLive", request, work)

    @routes.get("/v2/health/ready", summary="Server ready",
                responses={503: {"description": "not ready (starting or shutting down)"}})
    async def server_ready(request: Request) -> Response:
        async def work(_call: Call) -> Response:
            return JSONResponse({"ready": plane.ready}, status_code=200 if plane.ready else 503)
        return await calls.run("ServerReady", request, work)

    return routes
