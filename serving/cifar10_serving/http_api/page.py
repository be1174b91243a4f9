"""The web page at ``/``: pick, drop or paste images and see each one's classes.

Plain HTML, CSS and JavaScript in ``page/`` (installed as package data), read once when the
app is built (the page learns the server's body size limit from a ``<meta>`` tag filled in
then, to say "too large" before sending a file); the page talks to ``/v1/classify``, ``/v1/model`` and ``/v2/health/ready`` and
nothing else: its Content-Security-Policy lets the browser fetch only from this server.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from cifar10_core.errors import quoted
from cifar10_serving.http_api.api_docs import ErrorAnswer
from cifar10_serving.http_api.calls import Call
from cifar10_serving.http_api.context import Context
from cifar10_serving.http_api.errors import HttpError

PAGE = "index.html"
MAX_BODY_BYTES = b"%MAX_BODY_BYTES%"
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
               ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
HEADERS = {
    # blob: the thumbnails of the images picked (object URLs)
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; object-src 'none'; "
                               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _files(max_body_bytes: int) -> dict[str, tuple[bytes, str]]:
    """Every file of ``page/``: name -> (bytes, media type), the page's limit filled in."""
    folder = resources.files(__package__) / "page"
    found = {}
    for entry in folder.iterdir():
        media_type = MEDIA_TYPES.get("." + entry.name.rpartition(".")[2])
        if media_type is not None:
            found[entry.name] = (entry.read_bytes(), media_type)
    page, media_type = found[PAGE]
    found[PAGE] = (page.replace(MAX_BODY_BYTES, str(max_body_bytes).encode()), media_type)
    return found


def router(context: Context) -> APIRouter:
    routes = APIRouter(tags=["Web page"])
    calls = context.calls
    files = _files(calls.max_body_bytes)
    page_file_names = set(files) - {PAGE}  # the page itself only at /, where its links work

    def answer(name: str) -> Response:
        content, media_type = files[name]
        return Response(content, media_type=media_type, headers=HEADERS)

    @routes.get("/", summary="The web page",
                description="Pick, drop or paste images and see each one's top classes.",
                response_class=Response,
                responses={200: {"content": {"text/html": {}}, "description": "the page"}})
    async def page(request: Request) -> Response:
        async def work(_call: Call) -> Response:
            return answer(PAGE)
        return await calls.run("Page", request, work)

    @routes.get("/page/{name}", summary="The web page's files",
                description="Its style sheet, script and icon.", response_class=Response,
                openapi_extra={"parameters": [{"name": "name", "in": "path", "required": True,
                                               "schema": {"type": "string"}}]},
                responses={200: {"content": {"text/css": {}, "text/javascript": {}, "image/svg+xml": {}},
                                 "description": "the file"},
                           404: {"model": ErrorAnswer, "description": "no such file"}})
    async def page_file(request: Request) -> Response:
        async def work(_call: Call) -> Response:
            name = request.path_params["name"]
            if name not in page_file_names:
                raise HttpError(404, f"no file {quoted(name)} among the web page's files")
            return answer(name)
        return await calls.run("Page", request, work)

    return routes
