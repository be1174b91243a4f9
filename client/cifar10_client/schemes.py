"""Which transport an address names: ``http://`` and ``https://`` the HTTP door, anything
else gRPC (``host:port``, ``dns:///name:port``, ``ipv4:...``, ``unix:...``)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import grpc

from .errors import ClientError

HTTP_SCHEMES = ("http", "https")
GRPC_SCHEMES = ("dns", "ipv4", "ipv6", "unix", "unix-abstract", "vsock")

_URL_SCHEME = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.-]*)://")
_FORMS = "host:port or dns:///name:port (gRPC), http://host:port or https://host:port (HTTP)"


def url_scheme(address: str) -> str | None:
    """The lower-cased scheme of an address written as a URL (``scheme://...``), else None."""
    match = _URL_SCHEME.match(address)
    return match.group(1).lower() if match else None


def is_http(address: str) -> bool:
    return url_scheme(address) in HTTP_SCHEMES


def is_https(address: str) -> bool:
    return url_scheme(address) == "https"


def check_scheme(address: str) -> None:
    """ClientError (INVALID_ARGUMENT) for a URL whose scheme no transport speaks
    (``ftp://``, ``grpc://``)."""
    scheme = url_scheme(address)
    if scheme is not None and scheme not in HTTP_SCHEMES and scheme not in GRPC_SCHEMES:
        raise ClientError(grpc.StatusCode.INVALID_ARGUMENT,
                          f"unsupported scheme {scheme}:// in {address.strip()!r}: give {_FORMS}")


def uses_http(addresses: Sequence[str]) -> bool:
    """Whether ``addresses`` (several replicas or one) name the HTTP door: one ``http(s)://``
    address alone; ClientError for a bad scheme, or HTTP beside other addresses (HTTP takes
    one address: spread its calls with a load balancer in front of the replicas)."""
    for address in addresses:
        check_scheme(address)
    http = [a for a in addresses if is_http(a)]
    if http and len(addresses) > 1:
        raise ClientError(grpc.StatusCode.INVALID_ARGUMENT,
                          f"an HTTP address must come alone (one http(s):// URL; several replicas "
                          f"need a load balancer in front of them): {', '.join(addresses)}")
    return bool(http)
