"""Real local endpoints for delivery tests: an SMTP server (aiosmtpd), an HTTP JSON sink, and a
black hole that accepts connections and never answers. All on 127.0.0.1, each in its own
thread, so the test's event loop is never the one serving them."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HttpSink:
    """Collects JSON POST bodies by path; answers 200."""

    def __init__(self, port: int = 0) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(size) or b"{}")
                sink.received.append((self.path, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str, user: str = "") -> str:
        return f"json://{user + '@' if user else ''}127.0.0.1:{self.port}/{path}"

    def at(self, path: str) -> list[dict[str, Any]]:
        return [b for p, b in self.received if p.split("?")[0] == f"/{path}"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpSink:
    """A plain SMTP server that accepts any login (no TLS) and keeps the parsed messages."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                sink.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
                sink.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
                return "250 OK"

        def accept(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
            return AuthResult(success=True)

        self.port = free_port()
        self.controller = Controller(
            Handler(), hostname="127.0.0.1", port=self.port, authenticator=accept, auth_require_tls=False
        )
        self.controller.start()

    def url(self, password: str, to: str = "desk@example.com") -> str:
        return (
            f"mailto://capguard:{password}@127.0.0.1:{self.port}/"
            f"?to={to}&from=capguard@example.com&mode=insecure&smtp=127.0.0.1"
        )

    def texts(self) -> list[str]:
        return [m.get_body(preferencelist=("plain",)).get_content() for m in self.messages]

    def close(self) -> None:
        self.controller.stop()


class BlackHole:
    """Accepts TCP connections (kernel backlog) and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


async def wait_until(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def settle(seconds: float = 0.3) -> None:
    """Give background tasks and threads a moment of real time (to show that nothing happens)."""
    await asyncio.sleep(seconds)
