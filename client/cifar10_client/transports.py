"""The client an address calls for: ``http://`` or ``https://`` the HTTP door
(:class:`HttpClient`, :class:`AsyncHttpClient`), anything else gRPC (:class:`Client`,
:class:`AsyncClient`). Both kinds have the same API and raise the same ``ClientError``.

    with open_client("http://localhost:8501") as client:      # or "localhost:8500"
        print(client.classify("cat.png").label)
"""

from __future__ import annotations

from .aio import AsyncClient
from .connection import Addresses, split_addresses
from .http_aio import AsyncHttpClient
from .http_sync import HttpClient
from .schemes import uses_http
from .sync import Client


def open_client(address: Addresses | None = None, **settings) -> Client | HttpClient:
    """A blocking client for ``address`` (default ``$CIFAR10_ADDRESS``, else
    ``localhost:8500``); ``settings``: the clients' common keywords (timeout, tls, retry,
    preprocess)."""
    addresses = split_addresses(address)
    if uses_http(addresses):
        return HttpClient(addresses[0], **settings)
    return Client(addresses, **settings)


def open_async_client(address: Addresses | None = None, **settings) -> AsyncClient | AsyncHttpClient:
    """The asyncio twin of :func:`open_client` (create it inside a running event loop)."""
    addresses = split_addresses(address)
    if uses_http(addresses):
        return AsyncHttpClient(addresses[0], **settings)
    return AsyncClient(addresses, **settings)
