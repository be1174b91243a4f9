"""What the OpenAPI document says about answers that every route shares: the JSON error.

Routes take a ``Request`` and answer a ``Response`` (the call frame reads the body itself),
so FastAPI cannot infer their bodies: each route declares them, and its error answers with
``error_responses``.
"""

from __future__ import annotations

from typing import Any

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
