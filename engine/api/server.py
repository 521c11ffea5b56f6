"""Run the API inside the guard's own event loop.

    server = ApiServer(guard, api_config, "127.0.0.1", 8700)
    await server.start()      # bound and serving (server.port is the real port)
    ...
    await server.stop()       # graceful: live channels closed, requests finished

or `await serve(guard, api_config, host, port)` which runs until cancelled (or until
`server.should_exit` is set on the ApiServer it wraps). uvicorn's own signal handling is off:
the guard's runner owns SIGTERM/SIGINT and stops the API as part of its shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn

from engine.api.app import create_app
from engine.api.config import ApiConfig
from engine.api.security import StartupRefused, TokenTable, check_bind
from engine.remote import redact

if TYPE_CHECKING:
    from fastapi import FastAPI

    from engine.config import ConfigWriter
    from engine.guard import Guard

log = logging.getLogger("capguard.api")


def parse_bind(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """'HOST:PORT', '[::1]:PORT', ':PORT' or 'PORT' -> (host, port); ValueError names the problem."""
    value = text.strip()
    if not value:
        raise ValueError("empty bind address: expected HOST:PORT, e.g. 127.0.0.1:8700")
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or not value[end + 1 :].startswith(":"):
            raise ValueError(f"{text!r}: expected [IPv6]:PORT, e.g. [::1]:8700")
        host, port_text = value[1:end], value[end + 2 :]
    elif value.count(":") == 1:
        host, port_text = value.split(":")
        host = host or default_host
    elif ":" not in value and value.isdigit():
        host, port_text = default_host, value
    else:
        raise ValueError(f"{text!r}: expected HOST:PORT, e.g. 127.0.0.1:8700 (IPv6 as [::1]:8700)")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from 0 to 65535")
    return host, int(port_text)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the guard owns signal handling
        yield

    def install_signal_handlers(self) -> None:  # older uvicorn releases
        return None


class ApiServer:
    def __init__(
        self,
        guard: Guard,
        api_config: ApiConfig | None = None,
        host: str | None = None,
        port: int | None = None,
        config_writer: ConfigWriter | None = None,
    ) -> None:
        self.guard = guard
        self.config = api_config or ApiConfig()
        self.host = host if host is not None else self.config.host
        self.requested_port = port if port is not None else self.config.port
        check_bind(self.host, self.config, TokenTable(self.config))
        redact("uvicorn.error")  # uvicorn's WebSocket protocol logs handshake headers at DEBUG
        self.app: FastAPI = create_app(guard, self.config, config_writer)
        self._uv = _Server(
            uvicorn.Config(
                self.app,
                host=self.host,
                port=self.requested_port,
                lifespan="on",
                log_config=None,  # keep the host application's logging (JSON lines when headless)
                access_log=False,  # a request line is never logged (nor could a token be)
                server_header=False,
                ws_per_message_deflate=False,  # compression would be per client: serialise once, send as is
                ws_max_size=1 << 20,
                timeout_graceful_shutdown=3,
            )
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def should_exit(self) -> bool:
        return self._uv.should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._uv.should_exit = value

    @property
    def port(self) -> int:
        for server in self._uv.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self.requested_port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Bind and start serving; raises StartupRefused when the address cannot be used."""
        self._task = asyncio.get_running_loop().create_task(self._serve(), name="capguard-api")
        while not self._uv.started:
            if self._task.done():
                exc = self._task.exception()
                raise StartupRefused(f"the API could not start on {self.host}:{self.requested_port}: {exc}")
            await asyncio.sleep(0.01)
        log.info("api listening", extra={"event": {"event": "api_start", "url": self.url}})

    async def _serve(self) -> None:
        try:
            await self._uv.serve()
        except SystemExit as exc:  # uvicorn exits the process on a bind error: not ours to exit
            raise StartupRefused(f"address {self.host}:{self.requested_port} unavailable (exit {exc.code})") from None

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        self._uv.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._task
            self._task = None


async def serve(
    guard: Guard,
    api_config: ApiConfig | None,
    host: str | None = None,
    port: int | None = None,
    config_writer: ConfigWriter | None = None,
) -> None:
    """Serve the API in the running loop until cancelled; stops gracefully either way."""
    server = ApiServer(guard, api_config, host, port, config_writer)
    await server.start()
    try:
        await server.wait()
    finally:
        await server.stop()
