"""What the OpenAPI document says about answers that every route shares: the JSON error.

Routes take a ``Request`` and answer a ``Response`` (the call frame reads the body itself),
so FastAPI cannot infer their bodies: each route declares them, and its error answers with
``error_responses``. FastAPI would also list a 422 for every route with a parameter; this
app answers no 422 (a validation error is a 400), so ``without_422`` takes them out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field


class ErrorAnswer(BaseModel):
    """Every error answer's body (``cifar10_serving.http_api.errors``)."""

    error: str = Field(description="what is wrong, in words",
                       examples=["image 0: cannot decode image: cannot identify image file"])


ERROR_MEANINGS = {
    400: "a malformed request (JSON, multipart, base64, a parameter out of range) or no "
         "image that could be read",
    404: "an unknown model or version",
    413: "the body is over the server's --max-message-bytes",
    415: "an unsupported Content-Type",
    429: "over the server's admission limits: retry after Retry-After seconds",
    503: "starting or shutting down: retry after Retry-After seconds (another replica)",
    504: "the deadline (X-Request-Timeout) passed",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that may answer these error statuses."""
    return {status: {"model": ErrorAnswer, "description": ERROR_MEANINGS[status]}
            for status in statuses}


def without_422(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` without FastAPI's 422 answers and their schemas."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()  # cached in app.openapi_schema: edited once, in place
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
        return app.openapi_schema

    return openapi
