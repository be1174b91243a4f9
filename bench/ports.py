"""Local TCP ports: a free one, and whether one accepts connections; the one copy, used by
the benchmarks and by the tests."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts(host: str, port: int) -> bool:
    """True if ``host:port`` accepts a TCP connection now."""
    with socket.socket() as sock:
        try:
            sock.connect((host, port))
        except OSError:
            return False
    return True
