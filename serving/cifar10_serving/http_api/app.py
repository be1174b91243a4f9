"""The HTTP door's application: every route, the API docs, and errors as JSON.

Routes live in modules of their own, each a ``router(context)``: ``oip`` (the Open Inference
Protocol's REST API under ``/v2``), ``repository`` (Triton's repository extension under
``/v2/repository``, with ``--model-control explicit`` only), ``images`` (``/v1/classify``, images for people) and
``page`` (the web page at ``/``). The OpenAPI document is ``/openapi.json`` and its
interactive page ``/docs``, served from the installed ``fastapi_offline`` package: nothing
is fetched from outside the server.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

import cifar10_serving
from cifar10_serving.http_api import api_docs, images, oip, page, repository
from cifar10_serving.http_api.context import Context
from cifar10_serving.http_api.errors import INTERNAL_MESSAGE

OPENAPI_PATH = "/openapi.json"
DOCS_PATH = "/docs"
DOCS_STATIC_PATH = "/static/docs"


def build_app(context: Context) -> FastAPI:
    app = FastAPIOffline(
        title="cifar10-serving",
        version=cifar10_serving.__version__,
        summary="CIFAR-10 image classification: the Open Inference Protocol's REST API and "
                "an image endpoint",
        docs_url=DOCS_PATH, redoc_url=None, openapi_url=OPENAPI_PATH,
        static_url=DOCS_STATIC_PATH,
        swagger_ui_parameters={"validatorUrl": None},  # Swagger UI would ask swagger.io
    )
    app.include_router(oip.router(context))
    if context.settings.repository_api:
        app.include_router(repository.router(context))
    app.include_router(images.router(context))
    app.include_router(page.router(context))
    app.openapi = api_docs.without_422(app)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _bug)
    return app


async def _http_exception(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """An unknown path (404), a wrong method (405): the same JSON error form as the rest."""
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


async def _bug(_request: Request, _exc: Exception) -> JSONResponse:
    """What escaped a route's ``Calls.run`` (a bug): JSON 500. uvicorn logs the traceback
    and closes the connection, which the answer says: a client must not send on it again."""
    return JSONResponse({"error": INTERNAL_MESSAGE}, status_code=500,
                        headers={"Connection": "close"})


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}"
                         for e in exc.errors())
    return JSONResponse({"error": f"invalid request: {problems}"}, status_code=400)
