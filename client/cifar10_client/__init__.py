"""Client library for the cifar10.v2 Classifier service (the ``client`` extra).

    from cifar10_client import Client, ClientError

    with Client("localhost:8500", timeout=5.0) as client:
        result = client.classify("cat.png")          # path, bytes, PIL image or uint8 array
        print(result.label, result.probability, result.probabilities)
        results = client.classify_batch(["a.png", "b.jpg"], top_k=3)

``AsyncClient`` is the asyncio twin. Every failure raises ``ClientError`` (``.code`` is a
``grpc.StatusCode``, ``.message`` the server's message). gRPC itself retries calls on
UNAVAILABLE and RESOURCE_EXHAUSTED only (exponential backoff with jitter, or the server's
pushback when its queue is full), within the call's deadline, never a message over a
size limit (``RetryPolicy``, rendered into the channel's service config). ``TLSConfig`` turns on TLS (CA, optional client cert).
"""

from __future__ import annotations

from .aio import AsyncClient
from .connection import DEFAULT_ADDRESS, DEFAULT_TIMEOUT_S, NO_RETRY, RetryPolicy, TLSConfig
from .errors import RETRYABLE_CODES, ClientError
from .results import Classification, ClassScore, ModelInfo, TensorInfo
from .sync import Client

__all__ = [
    "AsyncClient",
    "Client",
    "ClientError",
    "Classification",
    "ClassScore",
    "ModelInfo",
    "TensorInfo",
    "RetryPolicy",
    "TLSConfig",
    "NO_RETRY",
    "RETRYABLE_CODES",
    "DEFAULT_ADDRESS",
    "DEFAULT_TIMEOUT_S",
]
