"""Test helpers: small loopback servers that speak the documented formats, and fixture loading.

Everything listens on 127.0.0.1 only, on a port the OS picks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from engine.model import Instrument

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
T0 = 1_780_000_000.0


def instruments() -> list[Instrument]:
    with (ROOT / "config.toml").open("rb") as f:
        raw = tomllib.load(f)
    return [Instrument.model_validate(i) for i in raw["instruments"]]


# ---------------------------------------------------------------------------------- doc JSON
def _strip_comments(text: str) -> str:
    out = []
    i, n = 0, len(text)
    in_str = False
    while i < n:
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                in_str = False
        elif c == '"':
            in_str = True
            out.append(c)
        elif c == "/" and text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def doc_json(text: str) -> Any:
    """Parse an example as the documentation prints it: drop `//` comments, then repair the
    commas the examples get wrong (missing between lines, doubled, trailing)."""
    s = _strip_comments(text)
    s = re.sub(r",\s*,", ",", s)
    s = re.sub(r'(["\d}\]el])(\s*\n\s*)(?=["{\[])', r"\1,\2", s)
    s = re.sub(r",(\s*[}\]])", r"\1", s)
    return json.loads(s)


def load_doc_json(name: str) -> Any:
    return doc_json((FIXTURES / "binance" / name).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------- HTTP
@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query_string(self) -> str:
        return urlsplit(self.target).query

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.query_string, keep_blank_values=True))

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Response:
    status: int = 200
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        self.headers.setdefault("Content-Type", "application/json")
        return json.dumps(self.body).encode()


Handler = Callable[[Request], "Awaitable[Response] | Response"]
REASONS = {200: "OK", 201: "Created", 304: "Not Modified", 400: "Bad Request", 404: "Not Found", 409: "Conflict"}


class HttpServer:
    """A minimal HTTP/1.1 server on loopback: one request per connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> HttpServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            line = await reader.readline()
            if not line:
                return
            method, target, _ = line.decode().split(" ", 2)
            headers: dict[str, str] = {}
            while True:
                h = await reader.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                k, _, v = h.decode().partition(":")
                headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            req = Request(method, target, headers, body)
            self.requests.append(req)
            resp = self.handler(req)
            if asyncio.iscoroutine(resp):
                resp = await resp
            assert isinstance(resp, Response)
            if resp.drop:
                return
            payload = resp.encoded() if resp.status != 304 else b""
            head = [f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Status')}"]
            for k, v in resp.headers.items():
                head.append(f"{k}: {v}")
            head += [f"Content-Length: {len(payload)}", "Connection: close", "", ""]
            writer.write("\r\n".join(head).encode() + payload)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:  # the test ended while this answer was still being delayed
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()


# ---------------------------------------------------------------------------------- misc
def assert_broker_shape(broker: object) -> None:
    """engine.orders.Broker is not runtime-checkable: compare the method signatures."""
    import inspect

    from engine.orders import Broker

    for name in ("send", "lookup", "cancel_orders"):
        method = getattr(broker, name)
        assert inspect.iscoroutinefunction(method), name
        want = list(inspect.signature(getattr(Broker, name)).parameters)[1:]
        assert list(inspect.signature(method).parameters) == want, name


async def wait_until(cond: Callable[[], bool], timeout: float = 5.0, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(step)
    return cond()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------- nats-server
def nats_server_binary() -> str | None:
    return shutil.which("nats-server") or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server") if os.path.exists(p)), None
    )


class NatsServer:
    """A real nats-server on a loopback port with JetStream file storage in `store`."""

    def __init__(self, binary: str, store: Path) -> None:
        self.binary = binary
        self.store = store
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = store / "nats-server.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store / "js")],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            time.sleep(0.05)
        raise RuntimeError("nats-server did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def load_doc_example(name: str) -> Any:
    """`load_doc_json` for the examples that also separate two objects with a full-width comma
    (U+FF0C, as the ACCOUNT_UPDATE example does): read as the ASCII comma it stands for."""
    return doc_json((FIXTURES / "binance" / name).read_text(encoding="utf-8").replace("\uff0c", ","))
