"""Client library for the cifar10.v2 Classifier service (the ``client`` extra).

    from cifar10_client import Client, ClientError

    with Client("localhost:8500", timeout=5.0) as client:
        result = client.classify("cat.png")          # path, bytes, PIL image or uint8 array
        print(result.label, result.probability, result.probabilities)
        results = client.classify_batch(["a.png", "b.jpg"], top_k=3)

``AsyncClient`` is the asyncio twin. ``HttpClient`` and ``AsyncHttpClient`` are the same API
over the HTTP door (``"http://localhost:8501"``, ``https://...``); ``open_client(address)``
and ``open_async_client`` pick the client by the address. Every failure raises
``ClientError`` (``.code`` is a ``grpc.StatusCode``, an HTTP status becoming the matching
one; ``.message`` the server's message); ``client.connect(wait=0)`` checks that a server
answers before the first call, or raises ``UnreachableError`` at once. Calls are retried on
UNAVAILABLE and RESOURCE_EXHAUSTED only (exponential backoff with jitter, or the server's
pushback when its queue is full: gRPC's trailer, HTTP's ``Retry-After``), within the call's
deadline, never a message over a size limit (``RetryPolicy``: gRPC's own retries, rendered
into the channel's service config; the HTTP client's loop). ``TLSConfig`` turns on TLS
(CA, optional client cert).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .aio import AsyncClient
    from .connection import DEFAULT_ADDRESS, DEFAULT_TIMEOUT_S, NO_RETRY, RetryPolicy, TLSConfig
    from .errors import RETRYABLE_CODES, ClientError, UnreachableError
    from .http_aio import AsyncHttpClient
    from .http_sync import HttpClient
    from .results import Accuracy, Classification, ClassScore, ModelInfo, ServedModels, TensorInfo
    from .sync import Client
    from .transports import open_async_client, open_client

# Each name is imported from its module on first use (PEP 562), not here: importing the
# package imports no grpc, so the command-line tools (cli.py) can turn gRPC's C-core log off
# before grpc is first imported, the one moment gRPC reads GRPC_VERBOSITY.
_MODULE_OF = {
    "AsyncClient": "aio",
    "Client": "sync",
    "HttpClient": "http_sync",
    "AsyncHttpClient": "http_aio",
    "open_client": "transports",
    "open_async_client": "transports",
    "ClientError": "errors",
    "UnreachableError": "errors",
    "RETRYABLE_CODES": "errors",
    "Classification": "results",
    "ClassScore": "results",
    "ModelInfo": "results",
    "ServedModels": "results",
    "Accuracy": "results",
    "TensorInfo": "results",
    "RetryPolicy": "connection",
    "TLSConfig": "connection",
    "NO_RETRY": "connection",
    "DEFAULT_ADDRESS": "connection",
    "DEFAULT_TIMEOUT_S": "connection",
}
__all__ = list(_MODULE_OF)


def __getattr__(name: str) -> object:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
