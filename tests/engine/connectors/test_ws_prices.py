"""The WebSocket price source against a real WebSocket server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from engine.connectors import WebSocketPricesConfig
from engine.connectors.ticks import tick
from engine.connectors.ws_prices import WebSocketPriceSource
from tests.engine.connectors.support import free_port, wait_until

TS = "2026-11-25T15:47:32.120Z"
FAST = {"initial": 0.05, "maximum": 0.2, "jitter": 0.5}


class TickServer:
    """Speaks capguard's tick format: records each subscription and acknowledges it."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.conns: list[ServerConnection] = []
        self.subscriptions: list[dict[str, Any]] = []
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ticks"

    async def start(self) -> None:
        self._server = await serve(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        self.conns.append(ws)
        sub = json.loads(await ws.recv())
        self.subscriptions.append(sub)
        await ws.send(json.dumps({"op": "subscribed", "symbols": sub["symbols"]}))
        await ws.wait_closed()

    async def send(self, obj: Any) -> None:
        await self.conns[-1].send(obj if isinstance(obj, str) else json.dumps(obj))

    async def drop(self) -> None:
        for ws in self.conns:
            with contextlib.suppress(Exception):
                await ws.close(code=1011, reason="test drop")


@pytest.fixture
async def server():
    s = TickServer()
    await s.start()
    yield s
    await s.stop()


def source(url: str, insts, clock, **kw) -> WebSocketPriceSource:
    cfg = WebSocketPricesConfig(url=url, backoff=FAST, **kw)
    return WebSocketPriceSource(cfg, insts, clock)


async def test_ticks_single_and_batched_reach_poll(server, insts, wall):
    src = source(server.url, insts, wall, symbols=["BTCUSDT", "ETHUSDT"])
    await src.start()
    try:
        assert await wait_until(lambda: src.connected and len(server.subscriptions) == 1)
        assert server.subscriptions[0] == {"op": "subscribe", "symbols": ["BTCUSDT", "ETHUSDT"]}
        await server.send(tick("BTCUSDT", 64000.5, TS))
        await server.send({"ticks": [tick("ETHUSDT", 3400.25, TS), tick("BTCUSDT", 64001.0, TS)]})
        assert await wait_until(lambda: src.counters["accepted"] == 3)
        ids, prices, times = src.poll(wall.now())
        btc, eth = src.index["BTCUSDT"], src.index["ETHUSDT"]
        assert ids.tolist() == [btc, eth, btc]
        assert prices.tolist() == [64000.5, 3400.25, 64001.0]
        assert (times > 0).all() and times.dtype.kind == "f"
        assert src.poll(wall.now())[0].size == 0  # drained
        assert src.subscribed == ["BTCUSDT", "ETHUSDT"]
    finally:
        await src.stop()
    assert not src.connected


async def test_reconnects_with_backoff_and_resubscribes(server, insts, wall):
    src = source(server.url, insts, wall)
    await src.start()
    try:
        assert await wait_until(lambda: src.connected)
        await server.drop()  # the server drops the connection
        assert await wait_until(lambda: len(server.subscriptions) == 2 and src.connected)
        assert server.subscriptions[1]["symbols"] == list(src.symbols)  # resubscribed
        # the server goes away entirely, then comes back on the same port
        await server.drop()
        await server.stop()
        assert await wait_until(lambda: not src.connected)
        await asyncio.sleep(0.5)
        assert src.counters["connects"] == 2
        assert len(src.delays) >= 2 and max(src.delays) <= 0.2  # backed off, capped at the maximum
        await server.start()
        assert await wait_until(lambda: len(server.subscriptions) == 3 and src.connected, timeout=5)
        await server.send(tick("SOLUSDT", 150.0, TS))
        assert await wait_until(lambda: src.counters["accepted"] == 1)
        assert src.last_error is not None  # why the last connection ended
    finally:
        await src.stop()


async def test_silent_instrument_is_stale_while_connected(server, insts, sim_clock):
    src = source(server.url, insts, sim_clock)
    await src.start()
    try:
        assert await wait_until(lambda: src.connected)
        await server.send({"ticks": [tick("BTCUSDT", 64000.0, TS), tick("ETHUSDT", 3400.0, TS)]})
        assert await wait_until(lambda: src.counters["accepted"] == 2)
        sim_clock.advance(4.0)
        await server.send(tick("BTCUSDT", 64010.0, TS))  # ETH goes silent
        assert await wait_until(lambda: src.counters["accepted"] == 3)
        sim_clock.advance(2.0)
        stale = src.stale(sim_clock.now(), max_age=5.0)
        assert src.connected
        assert not stale[src.index["BTCUSDT"]]
        assert stale[src.index["ETHUSDT"]]
        assert stale[src.index["SOLUSDT"]]  # never heard of
    finally:
        await src.stop()


async def test_malformed_messages_are_refused_logged_and_not_applied(server, insts, wall, caplog):
    caplog.set_level(logging.WARNING, logger="capguard.connectors")
    src = source(server.url, insts, wall)
    await src.start()
    try:
        assert await wait_until(lambda: src.connected)
        await server.send("this is not json")
        await server.send({"symbol": "BTCUSDT", "mark": -5, "ts": TS})
        await server.send({"ticks": [tick("BTCUSDT", 64000.0, TS), {"symbol": "ETHUSDT", "mark": 1, "ts": "no"}]})
        await server.send({"symbol": "BTCUSDT", "mark": 1.0, "ts": TS, "bid": 0.9})
        await server.send({"op": "error", "message": "rate limited"})
        assert await wait_until(lambda: src.counters["refused"] == 5)
        assert src.poll(wall.now())[0].size == 0  # nothing applied, not even the good tick of the batch
        text = caplog.text
        for reason in ("not valid JSON", "mark must be a positive", r"ticks[1]", "unknown key", "rate limited"):
            assert reason in text
        await server.send(tick("XRPUSDT", 0.5, TS))  # unknown symbol: ignored, counted
        await server.send(tick("BTCUSDT", 64000.0, TS))
        assert await wait_until(lambda: src.counters["accepted"] == 1)
        assert src.counters["ignored"] == 1
        assert src.poll(wall.now())[1].tolist() == [64000.0]
        assert src.connected  # a bad message does not cost the connection
    finally:
        await src.stop()


async def test_server_down_at_start_then_up(insts, wall):
    srv = TickServer()
    src = source(srv.url, insts, wall)
    await src.start()
    try:
        await asyncio.sleep(0.3)
        assert not src.connected and src.counters["connects"] == 0
        assert src.last_error is not None
        await srv.start()
        assert await wait_until(lambda: src.connected, timeout=5)
    finally:
        await src.stop()
        await srv.stop()
