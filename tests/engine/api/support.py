"""A real guard (hand-driven SimClock, tests/engine/guard/support.py) behind a real uvicorn
server on 127.0.0.1 (a free port), with one token per role."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import tomlkit
import websockets

from engine.api import ApiConfig, ApiServer
from engine.config import Config, ConfigWriter, LoadedConfig, bundled_config_path, parse_config
from engine.guard import Guard
from engine.remote import redact
from tests.engine.guard.support import make_guard

TOKENS = {"viewer": "viewer-token-0123456789", "trader": "trader-token-0123456789", "risk": "risk-token-0123456789ab"}
NAMES = {"viewer": "vic", "trader": "tom", "risk": "rita"}
PREFIX = "/api/v1/capital"


def config_text() -> str:
    """The bundled config.toml, less any section this engine does not know yet (other work in
    flight adds sections before their models land)."""
    doc = tomlkit.parse(bundled_config_path().read_text(encoding="utf-8"))
    for key in [k for k in doc if k not in Config.model_fields]:
        del doc[key]
    return tomlkit.dumps(doc)


def base_config() -> Config:
    return parse_config(config_text(), "bundled config")[0]


def writer_for(tmp_path: Path) -> ConfigWriter:
    path = tmp_path / "config.toml"
    path.write_text(config_text(), encoding="utf-8")
    config, doc = parse_config(path.read_text(encoding="utf-8"), str(path))
    return ConfigWriter(LoadedConfig(config=config, path=path, source="--config", document=doc))


def api_config(tokens: bool = True, **kw: Any) -> ApiConfig:
    entries = [{"name": NAMES[r], "role": r, "token": t} for r, t in TOKENS.items()] if tokens else []
    kw.setdefault("port", 0)
    return ApiConfig(tokens=entries, publish_hz=kw.pop("publish_hz", 20.0), **kw)


def auth(role: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"} if role else {}


@asynccontextmanager
async def serving(
    tmp_path: Path, scenario: str = "calm", *, tokens: bool = True, writer: bool = False, **kw: Any
) -> AsyncIterator[tuple[Guard, ApiServer]]:
    guard = make_guard(tmp_path, scenario, cfg=base_config())
    server = ApiServer(guard, api_config(tokens, **kw), config_writer=writer_for(tmp_path) if writer else None)
    await server.start()
    try:
        yield guard, server
    finally:
        await server.stop()
        guard.journal.close()


def client(server: ApiServer, role: str | None = "risk", **kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url + PREFIX, headers=auth(role), timeout=10, **kw)


def ws_url(server: ApiServer, channel: str) -> str:
    return server.url.replace("http://", "ws://") + f"/ws/capital/{channel}"


def connect(server: ApiServer, channel: str, role: str | None = "viewer", **kw: Any) -> Any:
    headers = {**auth(role), **kw.pop("additional_headers", {})}
    redact("websockets.client")  # as RemoteGuardView does: the library logs handshake headers at DEBUG
    return websockets.connect(ws_url(server, channel), additional_headers=headers, max_size=None, **kw)


async def receive(ws: Any, timeout: float = 5.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def until(ws: Any, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
    """The first message satisfying predicate (others are skipped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        msg = await receive(ws, max(0.05, deadline - loop.time()))
        if predicate(msg):
            return msg
