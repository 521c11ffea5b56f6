"""Mark prices over a WebSocket, reconnecting forever with exponential backoff and jitter.

`WebSocketSource` owns the connection loop: connect, (re)subscribe, read, and on any loss
wait `Backoff.next()` and start again; the backoff resets once a connection delivers a
message. `WebSocketPriceSource` speaks capguard's tick format (engine/connectors/ticks.py);
the Binance mark-price stream (engine/connectors/binance.py) reuses the same loop.

A malformed message is refused whole with a logged reason and nothing from it is applied.
Freshness is per instrument: the socket being connected says nothing about an instrument
that has gone silent (`stale(now, max_age)`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from engine.clock import Clock
from engine.connectors.base import (
    Backoff,
    BackoffConfig,
    ConnectorError,
    PriceSourceBase,
    Refused,
    WebSocketPricesConfig,
    bearer_headers,
)
from engine.connectors.ticks import decode, parse_ticks
from engine.model import Instrument

log = logging.getLogger("capguard.connectors.ws")


class WebSocketSource(PriceSourceBase):
    """The reconnecting read loop; subclasses give the URL, the subscription and the parser."""

    def __init__(
        self,
        name: str,
        instruments: Sequence[Instrument] | Sequence[str],
        clock: Clock,
        *,
        backoff: BackoffConfig | None = None,
        open_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        max_message_bytes: int = 1 << 20,
        headers: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(name, instruments, clock)
        self.backoff = Backoff(backoff, rng)
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_message_bytes = max_message_bytes
        self.headers = dict(headers or {})
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._ws: ClientConnection | None = None
        self.last_error: str | None = None
        self.delays: list[float] = []  # the reconnect waits taken (most recent last, capped)

    # subclass hooks -------------------------------------------------------------------
    def display_url(self) -> str:
        """The URL as logs may show it (no query string; subclasses hide secrets in the path)."""
        return _redact(self.url())

    def url(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    async def on_open(self, ws: ClientConnection) -> None:
        """Called after each connect, before reading (subscribe here)."""

    def on_message(self, raw: str | bytes) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"ws:{self.name}")

    async def stop(self) -> None:
        self._stopping.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), timeout=2.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self._connected = False

    async def _run(self) -> None:
        while not self._stopping.is_set():
            reason = "closed"
            try:
                async with connect(
                    self.url(),
                    additional_headers=self.headers or None,
                    open_timeout=self.open_timeout,
                    ping_interval=self.ping_interval,
                    ping_timeout=self.ping_timeout,
                    max_size=self.max_message_bytes,
                    close_timeout=2.0,
                ) as ws:
                    self._ws = ws
                    await self.on_open(ws)
                    self._connected = True
                    self.counters["connects"] += 1
                    log.info("%s: connected to %s", self.name, self.display_url())
                    async for raw in ws:
                        self.counters["messages"] += 1
                        try:
                            self.on_message(raw)
                        except Refused as exc:
                            self.refuse("message", str(exc))
                        else:
                            self.backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any loss of the connection: back off and reconnect
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                self._connected = False
                self._ws = None
            if self._stopping.is_set():
                break
            self.last_error = reason
            delay = self.backoff.next()
            self.delays = [*self.delays[-49:], delay]
            log.warning(
                "%s: disconnected (%s); reconnecting in %.2fs",
                self.name,
                reason,
                delay,
                extra={"event": {"event": "ws_disconnected", "source": self.name, "reason": reason, "retry_in": delay}},
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)

    def status(self) -> dict[str, Any]:
        return {**super().status(), "last_error": self.last_error}


def _redact(url: str) -> str:
    return url.split("?", 1)[0]


class WebSocketPriceSource(WebSocketSource):
    """capguard's tick format: subscribes to the configured symbols after every connect."""

    def __init__(
        self,
        config: WebSocketPricesConfig,
        instruments: Sequence[Instrument] | Sequence[str],
        clock: Clock,
        *,
        env: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
        name: str = "websocket",
    ) -> None:
        super().__init__(
            name,
            instruments,
            clock,
            backoff=config.backoff,
            open_timeout=config.open_timeout,
            ping_interval=config.ping_interval,
            ping_timeout=config.ping_timeout,
            max_message_bytes=config.max_message_bytes,
            headers=bearer_headers(config.token_env, env),
            rng=rng,
        )
        self.config = config
        wanted = config.symbols or list(self.symbols)
        unknown = [s for s in wanted if s not in self.index]
        if unknown:
            raise ConnectorError(f"websocket symbols not configured as instruments: {', '.join(unknown)}")
        self.subscribe_symbols = list(wanted)
        self.subscribed: list[str] = []

    def url(self) -> str:
        return self.config.url

    async def on_open(self, ws: ClientConnection) -> None:
        self.subscribed = []
        await ws.send(json.dumps({"op": "subscribe", "symbols": self.subscribe_symbols}))

    def on_message(self, raw: str | bytes) -> None:
        obj = decode(raw)
        if isinstance(obj, dict) and "op" in obj:
            self._control(obj)
            return
        items, ignored = parse_ticks(obj, self.index)
        self.counters["ignored"] += ignored
        if items:
            self.accept(items)

    def _control(self, obj: dict[str, Any]) -> None:
        op = obj.get("op")
        if op == "subscribed" and isinstance(obj.get("symbols"), list):
            self.subscribed = [s for s in obj["symbols"] if isinstance(s, str)]
        elif op == "error":
            raise Refused(f"server error: {obj.get('message')!r}")
        else:
            raise Refused(f"unknown control message op={op!r}")
