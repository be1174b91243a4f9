"""A tiny authoritative DNS server on loopback for tests: answers A queries for one name
with the addresses the test sets (changeable while it runs), nothing for other types.

gRPC's c-ares resolver asks it when the target names it as the DNS authority:
``dns://127.0.0.1:PORT/name:port``. Hand-written (RFC 1035 wire format, UDP and TCP) so
the tests need no DNS package.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections.abc import Sequence

A, IN = 1, 1


def _question(packet: bytes) -> tuple[str, int, int]:
    """(name, qtype, end offset) of the first question."""
    labels, offset = [], 12
    while (length := packet[offset]) != 0:
        labels.append(packet[offset + 1:offset + 1 + length].decode("ascii").lower())
        offset += 1 + length
    qtype, _qclass = struct.unpack_from("!HH", packet, offset + 1)
    return ".".join(labels), qtype, offset + 5


class DNSServer:
    """``DNSServer(name, ["127.0.0.1"])``: answers ``name``'s A queries on
    ``127.0.0.1:self.port`` (UDP and TCP); ``set_addresses`` changes the answer;
    ``queries`` counts the A queries for ``name``. A context manager."""

    def __init__(self, name: str, addresses: Sequence[str], ttl: int = 0) -> None:
        self.name = name.lower().rstrip(".")
        self.ttl = ttl
        self.queries = 0
        self._lock = threading.Lock()
        self.set_addresses(addresses)
        dns = self

        class UDP(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                sock.sendto(dns.answer(data), self.client_address)

        class TCP(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                while header := self.request.recv(2):
                    (length,) = struct.unpack("!H", header)
                    data = b""
                    while len(data) < length:
                        if not (chunk := self.request.recv(length - len(data))):
                            return
                        data += chunk
                    reply = dns.answer(data)
                    self.request.sendall(struct.pack("!H", len(reply)) + reply)

        self._udp = socketserver.ThreadingUDPServer(("127.0.0.1", 0), UDP)
        self.port = self._udp.server_address[1]
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._tcp = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), TCP)
        for server in (self._udp, self._tcp):
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def set_addresses(self, addresses: Sequence[str]) -> None:
        packed = [socket.inet_aton(a) for a in addresses]
        with self._lock:
            self._addresses = packed

    def answer(self, query: bytes) -> bytes:
        (query_id, flags) = struct.unpack_from("!HH", query)
        name, qtype, end = _question(query)
        with self._lock:
            addresses = list(self._addresses)
            if name == self.name and qtype == A:
                self.queries += 1
        rcode = 0 if name == self.name else 3  # NXDOMAIN for any other name
        records = addresses if name == self.name and qtype == A else []
        header = struct.pack("!HHHHHH", query_id, 0x8400 | (flags & 0x0100) | rcode, 1,
                             len(records), 0, 0)
        answers = b"".join(struct.pack("!HHHIH", 0xC00C, A, IN, self.ttl, 4) + packed
                           for packed in records)
        return header + query[12:end] + answers

    def close(self) -> None:
        for server in (self._udp, self._tcp):
            server.shutdown()
            server.server_close()

    def __enter__(self) -> DNSServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
