"""A tiny raw-HTTP server on 127.0.0.1 for transport tests that need a real socket.

``start(respond)`` (from :func:`loopback_servers`) starts one; ``respond(request)``
returns the raw bytes to send, ``None`` to close without answering, or :data:`HANG` to
hold the connection open until teardown (for timeouts). Every request is recorded as :class:`Seen`.
"""

from __future__ import annotations

import contextlib
import socketserver
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

HANG = object()


@dataclass
class Seen:
    request_line: str
    head: bytes
    body: bytes


class Loopback:
    def __init__(self, respond: Callable[[Seen], Any]) -> None:
        self.respond = respond
        self.seen: list[Seen] = []
        self.connections = 0
        self.release = threading.Event()
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer.connections += 1
                self.request.settimeout(5)
                while True:
                    seen = self._read()
                    if seen is None:
                        return
                    outer.seen.append(seen)
                    answer = outer.respond(seen)
                    if answer is HANG:
                        outer.release.wait(10)
                        return
                    if answer is None:
                        return
                    self.request.sendall(answer)
                    if seen.request_line.startswith("CONNECT"):
                        return

            def _read(self) -> Seen | None:
                data = b""
                while b"\r\n\r\n" not in data:
                    try:
                        chunk = self.request.recv(65536)
                    except OSError:
                        return None
                    if not chunk:
                        return None
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                while len(body) < length:
                    chunk = self.request.recv(65536)
                    if not chunk:
                        break
                    body += chunk
                return Seen(head.split(b"\r\n")[0].decode("latin-1"), head, body)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def http_response(
    status: int = 200, body: bytes = b"{}", headers: dict[str, str] | None = None
) -> bytes:
    lines = [
        f"HTTP/1.1 {status} X",
        f"Content-Length: {len(body)}",
        "Content-Type: application/json",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@contextlib.contextmanager
def loopback_servers() -> Iterator[Callable[[Callable[[Seen], Any]], Loopback]]:
    """Yield a starter for servers; every server it started is shut down on exit.

    Test modules wrap this in their own ``loopback`` fixture.
    """
    servers: list[Loopback] = []

    def start(respond: Callable[[Seen], Any]) -> Loopback:
        server = Loopback(respond)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.close()
