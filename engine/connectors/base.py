"""The interfaces every connector implements, their configuration, and the factory.

Two kinds of source feed the guard:

- a `PriceSource` delivers mark prices. `poll(now)` drains what arrived since the last poll as
  three aligned arrays (instrument indices, prices, receive times on the guard's clock), the
  same shape as the simulated feed plus the receive times. Each source keeps the last receive
  time per instrument, so a connected socket whose instruments have gone silent is still seen
  as stale (`stale(now, max_age)`).
- an `AccountSource` delivers the latest snapshot of balances, positions and open orders as
  `engine.model.Account` records, with `last_ok` (clock time of the last poll that confirmed the
  data). Its `data_state(now)` is STALE when polling has failed for longer than `max_age`.

Times are the injected clock's seconds. Network pacing (poll intervals, reconnect backoff) waits
on the event loop (`asyncio.sleep`, injectable), because it paces sockets, not the guard's
decisions; every staleness judgement reads the clock.

Configuration: pydantic models that refuse unknown keys, one per connector, gathered in
`SourcesConfig` (the `[sources]` table) and `BrokerConfig` (the `[broker]` table). Secrets never
appear in configuration: a config names the environment variable that holds each one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from engine.clock import Clock
from engine.ladder import DataState
from engine.model import Account, Instrument

if TYPE_CHECKING:
    from engine.connectors.binance import BinanceVenue
    from engine.connectors.nats_bus import NatsPublisher
    from engine.connectors.risk_center import RiskCenterClient
    from engine.orders import Broker

log = logging.getLogger("capguard.connectors")

Sleep = Callable[[float], Awaitable[None]]
_EMPTY_I = np.zeros(0, dtype=np.int64)
_EMPTY_F = np.zeros(0, dtype=np.float64)


class ConnectorError(Exception):
    """A connector cannot be built or used as configured (the message names what is missing)."""


class Refused(ValueError):
    """Input from a source refused whole; the message is the reason that gets logged."""


# ---------------------------------------------------------------------------------- helpers
def refuse(logger: logging.Logger, source: str, what: str, reason: str, **fields: Any) -> None:
    """Log a refused input with its reason (one line; JSON in headless mode)."""
    logger.warning(
        "%s: refused %s: %s",
        source,
        what,
        reason,
        extra={"event": {"event": "refused", "source": source, "what": what, "reason": reason, **fields}},
    )


def describe_errors(exc: ValidationError | list[Any], limit: int = 3) -> str:
    """A short reason from a pydantic error (or its `errors()` list):
    `accounts[0].positions[1].qty: Input should be ...`."""
    errors = exc.errors() if isinstance(exc, ValidationError) else exc
    parts = []
    for err in errors[:limit]:
        where = ""
        for item in err["loc"]:
            where += f"[{item}]" if isinstance(item, int) else (f".{item}" if where else str(item))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{where}: {msg}" if where else msg)
    more = len(errors) - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def secret_from_env(name: str, env: Mapping[str, str] | None = None, what: str = "secret") -> str:
    """The value of environment variable `name`; ConnectorError names the variable, never a value."""
    value = (os.environ if env is None else env).get(name, "")
    if not value:
        raise ConnectorError(f"{what}: environment variable {name} is not set")
    return value


def bearer_headers(token_env: str | None, env: Mapping[str, str] | None = None) -> dict[str, str]:
    if not token_env:
        return {}
    return {"Authorization": f"Bearer {secret_from_env(token_env, env, 'bearer token')}"}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackoffConfig(Strict):
    """Exponential backoff with jitter: attempt n waits min(maximum, initial * factor**n),
    less a random fraction of up to `jitter` of it (so waits spread over [1 - jitter, 1] x)."""

    initial: float = Field(default=0.5, gt=0, le=600, description="seconds before the first retry")
    maximum: float = Field(default=30.0, gt=0, le=3600, description="longest wait, seconds")
    factor: float = Field(default=2.0, ge=1, le=10)
    jitter: float = Field(default=0.5, ge=0, le=1, description="fraction of each wait drawn at random")

    @model_validator(mode="after")
    def _ordered(self) -> BackoffConfig:
        if self.maximum < self.initial:
            raise ValueError(f"backoff maximum {self.maximum} is below initial {self.initial}")
        return self


class Backoff:
    def __init__(self, config: BackoffConfig | None = None, rng: random.Random | None = None) -> None:
        self.config = config or BackoffConfig()
        self.rng = rng or random.Random()
        self.attempt = 0

    def next(self) -> float:
        c = self.config
        base = min(c.maximum, c.initial * c.factor ** min(self.attempt, 64))
        self.attempt += 1
        return base * (1.0 - c.jitter * self.rng.random())

    def reset(self) -> None:
        self.attempt = 0


def _url(value: str, schemes: tuple[str, ...], what: str) -> str:
    if not re.match(rf"^({'|'.join(schemes)})://[^\s/]+", value):
        raise ValueError(f"{what} must be a {' or '.join(s + '://' for s in schemes)} URL, got {value!r}")
    return value


_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


# ---------------------------------------------------------------------------------- prices
@runtime_checkable
class PriceSource(Protocol):
    name: str

    @property
    def connected(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def poll(self, now: float, *, coalesce: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Drain what arrived: (instrument indices, prices, receive times), in arrival order."""
        ...

    @property
    def last_received(self) -> np.ndarray:
        """Clock time of the last accepted price per instrument (NaN: never)."""
        ...

    def stale(self, now: float, max_age: float) -> np.ndarray:
        """Per instrument: no accepted price within max_age (or never)."""
        ...


class TickBuffer:
    """Accepted prices waiting for the next poll, and the last receive time per instrument."""

    def __init__(self, n_instruments: int, max_pending: int = 200_000) -> None:
        self.max_pending = max_pending  # beyond this, undrained ticks are coalesced per instrument
        self.compactions = 0
        self._ids: list[int] = []
        self._prices: list[float] = []
        self._times: list[float] = []
        self.last_received = np.full(n_instruments, np.nan)
        self.last_price = np.full(n_instruments, np.nan)

    def add(self, items: Sequence[tuple[int, float]], received: float) -> None:
        for i, p in items:
            self._ids.append(i)
            self._prices.append(p)
            self._times.append(received)
            self.last_received[i] = received
            self.last_price[i] = p
        if len(self._ids) > self.max_pending:
            ids, prices, times = self.drain(coalesce=True)
            self._ids, self._prices, self._times = ids.tolist(), prices.tolist(), times.tolist()
            self.compactions += 1

    def drain(self, coalesce: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self._ids:
            return _EMPTY_I, _EMPTY_F, _EMPTY_F
        ids = np.array(self._ids, dtype=np.int64)
        prices = np.array(self._prices, dtype=np.float64)
        times = np.array(self._times, dtype=np.float64)
        self._ids, self._prices, self._times = [], [], []
        return coalesce_ticks(ids, prices, times) if coalesce else (ids, prices, times)


def coalesce_ticks(ids: np.ndarray, prices: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The last update of each instrument (arrival order = array order), in instrument order."""
    uniq, first = np.unique(ids[::-1], return_index=True)
    keep = ids.size - 1 - first
    return uniq, prices[keep], times[keep]


class PriceSourceBase:
    """Shared state of the price sources: symbols, buffer, counters, freshness."""

    def __init__(self, name: str, instruments: Sequence[Instrument] | Sequence[str], clock: Clock) -> None:
        self.name = name
        self.symbols: tuple[str, ...] = tuple(i if isinstance(i, str) else i.symbol for i in instruments)
        self.index = {s: n for n, s in enumerate(self.symbols)}
        self.clock = clock
        self.buffer = TickBuffer(len(self.symbols))
        self._connected = False
        self.counters = {"messages": 0, "accepted": 0, "refused": 0, "ignored": 0, "connects": 0}
        self.last_refusal: str | None = None
        # Last funding rate per instrument (per funding interval, fraction) where a feed carries
        # one (Binance markPrice `r`); NaN where unknown. Used by the ratio projection.
        self.funding_rate = np.full(len(self.symbols), np.nan)

    @property
    def connected(self) -> bool:
        return self._connected

    async def start(self) -> None:
        """Subclasses open their connection here (the base has none)."""

    async def stop(self) -> None:
        """Subclasses close their connection here."""

    @property
    def last_received(self) -> np.ndarray:
        return self.buffer.last_received

    def poll(self, now: float, *, coalesce: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.buffer.drain(coalesce)

    def stale(self, now: float, max_age: float) -> np.ndarray:
        last = self.buffer.last_received
        with np.errstate(invalid="ignore"):
            return ~(now - last <= max_age)

    def accept(self, items: Sequence[tuple[int, float]]) -> None:
        self.buffer.add(items, self.clock.now())
        self.counters["accepted"] += len(items)

    def refuse(self, what: str, reason: str) -> None:
        self.counters["refused"] += 1
        self.last_refusal = reason
        refuse(log, self.name, what, reason)

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "connected": self.connected,
            **self.counters,
            "last_refusal": self.last_refusal,
        }


class MergedPriceSource:
    """Several price sources seen as one (each instrument should come from one of them)."""

    def __init__(self, sources: Sequence[PriceSource], n_instruments: int) -> None:
        self.sources = list(sources)
        self.name = "+".join(s.name for s in self.sources) or "none"
        self.n = n_instruments

    @property
    def connected(self) -> bool:
        return bool(self.sources) and all(s.connected for s in self.sources)

    async def start(self) -> None:
        for s in self.sources:
            await s.start()

    async def stop(self) -> None:
        for s in self.sources:
            await s.stop()

    def poll(self, now: float, *, coalesce: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        parts = [s.poll(now, coalesce=coalesce) for s in self.sources]
        parts = [p for p in parts if p[0].size]
        if not parts:
            return _EMPTY_I, _EMPTY_F, _EMPTY_F
        if len(parts) == 1:
            return parts[0]
        ids, prices, times = (np.concatenate([p[k] for p in parts]) for k in range(3))
        order = np.argsort(times, kind="stable")
        ids, prices, times = ids[order], prices[order], times[order]
        return coalesce_ticks(ids, prices, times) if coalesce else (ids, prices, times)

    @property
    def last_received(self) -> np.ndarray:
        if not self.sources:
            return np.full(self.n, np.nan)
        return np.fmax.reduce([s.last_received for s in self.sources])

    @property
    def funding_rate(self) -> np.ndarray:
        """Per instrument, the rate of the first source that knows one (NaN where none does)."""
        out = np.full(self.n, np.nan)
        for s in self.sources:
            rate = getattr(s, "funding_rate", None)
            if rate is not None:
                out = np.where(np.isnan(out), rate, out)
        return out

    def stale(self, now: float, max_age: float) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return ~(now - self.last_received <= max_age)


# ---------------------------------------------------------------------------------- accounts
@dataclass(frozen=True)
class VenuePosition:
    """A position as the venue reports it, with the venue's own risk figures."""

    account: str
    symbol: str
    qty: float
    entry_price: float
    maintenance_margin: float | None = None
    liquidation_price: float | None = None  # None: the venue reports none
    mark_price: float | None = None
    isolated_margin: float | None = None
    update_time: float | None = None  # seconds since the epoch, as the venue stamped it


@dataclass(frozen=True)
class AccountSnapshot:
    accounts: tuple[Account, ...]
    received: float  # clock time the data was fetched
    seq: int  # increases with every applied change
    etag: str | None = None
    as_of: str | None = None  # the source's own timestamp, ISO-8601
    venue: tuple[VenuePosition, ...] = ()


@runtime_checkable
class AccountSource(Protocol):
    name: str
    max_age: float

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def refresh(self) -> bool:
        """Poll once now; True when the data is confirmed current."""
        ...

    @property
    def snapshot(self) -> AccountSnapshot | None: ...

    @property
    def last_ok(self) -> float | None: ...

    def data_state(self, now: float) -> DataState: ...


class AccountSourceBase:
    def __init__(self, name: str, instruments: Sequence[Instrument] | Sequence[str], clock: Clock, max_age: float):
        self.name = name
        self.symbols = frozenset(i if isinstance(i, str) else i.symbol for i in instruments)
        self.clock = clock
        self.max_age = max_age
        self._snapshot: AccountSnapshot | None = None
        self._last_ok: float | None = None
        self.last_error: str | None = None
        self.counters = {"polls": 0, "applied": 0, "unchanged": 0, "refused": 0, "failed": 0}
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.listeners: list[Callable[[AccountSnapshot], Any]] = []

    @property
    def snapshot(self) -> AccountSnapshot | None:
        return self._snapshot

    @property
    def last_ok(self) -> float | None:
        return self._last_ok

    def data_state(self, now: float) -> DataState:
        if self._last_ok is None or self._snapshot is None or now - self._last_ok > self.max_age:
            return DataState.STALE
        return DataState.OK

    def check_accounts(self, accounts: Iterable[Account]) -> tuple[Account, ...]:
        """Refuse (raise Refused) duplicate ids or symbols that are not configured instruments."""
        out = tuple(accounts)
        seen: set[str] = set()
        for a in out:
            if a.id in seen:
                raise Refused(f"account {a.id} is listed twice")
            seen.add(a.id)
            for k, p in enumerate(a.positions):
                if p.symbol not in self.symbols:
                    raise Refused(f"account {a.id} position {k}: {p.symbol} is not a configured instrument")
            for k, o in enumerate(a.open_orders):
                if o.symbol not in self.symbols:
                    raise Refused(f"account {a.id} open order {k}: {o.symbol} is not a configured instrument")
        return out

    def apply(self, accounts: tuple[Account, ...], **meta: Any) -> AccountSnapshot:
        seq = 1 if self._snapshot is None else self._snapshot.seq + 1
        snap = AccountSnapshot(accounts=accounts, received=self.clock.now(), seq=seq, **meta)
        self._snapshot = snap
        self._last_ok = snap.received
        self.last_error = None
        self.counters["applied"] += 1
        for listener in list(self.listeners):
            try:
                listener(snap)
            except Exception:  # a listener must never break the source
                log.exception("%s: snapshot listener failed", self.name)
        return snap

    def confirm(self) -> None:
        """The source confirmed the data is unchanged (e.g. 304)."""
        self._last_ok = self.clock.now()
        self.last_error = None
        self.counters["unchanged"] += 1

    def refused(self, what: str, reason: str) -> None:
        self.counters["refused"] += 1
        self.last_error = f"refused: {reason}"
        refuse(log, self.name, what, reason)

    def failed(self, reason: str) -> None:
        self.counters["failed"] += 1
        self.last_error = reason
        log.warning(
            "%s: poll failed: %s",
            self.name,
            reason,
            extra={"event": {"event": "poll_failed", "source": self.name, "reason": reason}},
        )

    def status(self, now: float | None = None) -> dict[str, Any]:
        now = self.clock.now() if now is None else now
        return {
            "name": self.name,
            "data_state": self.data_state(now).name,
            "last_ok": self._last_ok,
            "last_error": self.last_error,
            "seq": None if self._snapshot is None else self._snapshot.seq,
            **self.counters,
        }

    # the polling loop ---------------------------------------------------------------
    async def refresh(self) -> bool:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    async def _poll_loop(self, interval: float) -> None:
        while not self._stopping.is_set():
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a poll must never end the loop
                log.exception("%s: poll crashed", self.name)
                self.failed(f"internal error: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=interval)

    async def _start_loop(self, interval: float) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.get_running_loop().create_task(self._poll_loop(interval))

    async def _stop_loop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None


# ---------------------------------------------------------------------------------- config
class WebSocketPricesConfig(Strict):
    """Mark prices in capguard's tick format over a WebSocket (docs/connectors.md)."""

    url: str
    symbols: list[str] | None = Field(default=None, description="subscribe to these; default every instrument")
    backoff: BackoffConfig = Field(default_factory=BackoffConfig)
    open_timeout: float = Field(default=10.0, gt=0, le=120)
    ping_interval: float | None = Field(default=20.0, gt=0, le=600)
    ping_timeout: float | None = Field(default=20.0, gt=0, le=600)
    max_message_bytes: int = Field(default=1 << 20, ge=1024, le=1 << 26)
    token_env: str | None = Field(default=None, pattern=_ENV_NAME, description="env var with a bearer token")

    @field_validator("url")
    @classmethod
    def _ws(cls, v: str) -> str:
        return _url(v, ("ws", "wss"), "url")


class RestAccountsConfig(Strict):
    """Balances, positions and open orders polled from a REST account service."""

    url: str
    interval: float = Field(default=2.0, gt=0, le=3600, description="seconds between polls")
    max_age: float = Field(default=10.0, gt=0, le=86400, description="STALE after this long without a good poll")
    timeout: float = Field(default=5.0, gt=0, le=120, description="seconds per request")
    retries: int = Field(default=2, ge=0, le=10, description="retries of a failed request within one poll")
    backoff: BackoffConfig = Field(default_factory=lambda: BackoffConfig(initial=0.2, maximum=2.0))
    token_env: str | None = Field(default=None, pattern=_ENV_NAME)

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        return _url(v, ("http", "https"), "url")


class RiskCenterConfig(Strict):
    """Thresholds and limits pulled from a risk center; changes published to NATS and a webhook."""

    url: str
    interval: float = Field(default=30.0, gt=0, le=86400)
    max_age: float = Field(default=300.0, gt=0, le=864000)
    timeout: float = Field(default=5.0, gt=0, le=120)
    retries: int = Field(default=2, ge=0, le=10)
    backoff: BackoffConfig = Field(default_factory=lambda: BackoffConfig(initial=0.2, maximum=2.0))
    token_env: str | None = Field(default=None, pattern=_ENV_NAME)
    webhook: str | None = Field(default=None, description="POST every threshold change here (JSON)")
    webhook_token_env: str | None = Field(default=None, pattern=_ENV_NAME)
    webhook_retries: int = Field(default=3, ge=0, le=10)

    @field_validator("url", "webhook")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        return None if v is None else _url(v, ("http", "https"), "url")


class BinanceAccountConfig(Strict):
    """One Binance USD-M account: its capguard id and the env variables holding its API key."""

    id: str = Field(min_length=1)
    name: str | None = None
    desk: str = "default"
    strategy: str = "default"
    risk_class: str = "standard"
    api_key_env: str = Field(default="BINANCE_API_KEY", pattern=_ENV_NAME)
    api_secret_env: str = Field(default="BINANCE_API_SECRET", pattern=_ENV_NAME)
    collateral: str = Field(default="USDT", min_length=1, description="wallet asset that margins the account")


class BinanceConfig(Strict):
    """Binance USD-M futures: mark prices, brackets, accounts, orders. Testnet by default."""

    rest_url: str = "https://demo-fapi.binance.com"
    ws_url: str = "wss://fstream.binancefuture.com/market"
    accounts: list[BinanceAccountConfig] = Field(default_factory=list)
    symbols: list[str] | None = Field(default=None, description="default: every instrument")
    mark_price_speed: Literal["1s", "3s"] = "1s"
    recv_window: int = Field(default=5000, ge=1, le=60000, description="ms a signed request stays valid")
    timeout: float = Field(default=5.0, gt=0, le=60)
    account_interval: float = Field(default=5.0, gt=0, le=3600)
    resync_interval: float = Field(
        default=30.0, gt=0, le=86400, description="seconds between resyncs (the guard runs them)"
    )
    max_age: float = Field(default=20.0, gt=0, le=86400)
    mm_tolerance: float = Field(default=0.02, ge=0, le=1, description="relative maintenance-margin divergence")
    liq_tolerance: float = Field(default=0.005, ge=0, le=1, description="relative liquidation-price divergence")
    qty_tolerance: float = Field(default=1e-9, ge=0)
    backoff: BackoffConfig = Field(default_factory=BackoffConfig)
    ping_interval: float | None = Field(default=20.0, gt=0, le=600)
    user_stream: bool = Field(
        default=True, description="balances and positions pushed over the user data stream (needs accounts)"
    )
    user_ws_url: str = Field(
        default="wss://fstream.binancefuture.com/private", description="user data streams: <user_ws_url>/ws/<listenKey>"
    )
    listen_key_keepalive: float = Field(
        default=1800.0, ge=1, lt=3600, description="seconds between listen key keepalives (Binance expires at 60 min)"
    )
    time_sync_interval: float = Field(
        default=300.0, gt=0, le=86400, description="seconds between GET /fapi/v1/time (server clock offset)"
    )

    @field_validator("rest_url")
    @classmethod
    def _http(cls, v: str) -> str:
        return _url(v, ("http", "https"), "rest_url").rstrip("/")

    @field_validator("ws_url", "user_ws_url")
    @classmethod
    def _ws(cls, v: str, info: ValidationInfo) -> str:
        return _url(v, ("ws", "wss"), info.field_name or "url").rstrip("/")

    @model_validator(mode="after")
    def _unique(self) -> BinanceConfig:
        ids = [a.id for a in self.accounts]
        if len(set(ids)) != len(ids):
            raise ValueError("binance account ids must be unique")
        return self


class NatsConfig(Strict):
    """Optional NATS: guard events out, ticks and account updates in. Never on the order path."""

    servers: list[str] = Field(default_factory=lambda: ["nats://127.0.0.1:4222"], min_length=1)
    name: str = "capguard"
    subject_prefix: str = Field(default="capguard", pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
    stream: str = Field(default="CAPGUARD", pattern=r"^[A-Za-z0-9_-]+$")
    storage: Literal["file", "memory"] = "file"
    duplicate_window: float = Field(default=120.0, gt=0, le=86400, description="seconds a msg id is remembered")
    max_age: float = Field(default=7 * 86400.0, gt=0, description="seconds the stream keeps a message")
    connect_timeout: float = Field(default=2.0, gt=0, le=60)
    reconnect_time_wait: float = Field(default=1.0, gt=0, le=60)
    publish_timeout: float = Field(default=2.0, gt=0, le=60)
    outbox: int = Field(default=100_000, ge=100, description="events held while NATS is unreachable")
    backoff: BackoffConfig = Field(default_factory=lambda: BackoffConfig(initial=0.2, maximum=5.0))
    publish_events: bool = True
    margin_interval: float = Field(
        default=1.0, ge=0, le=3600, description="seconds between margin snapshots on capguard.margin.<account>; 0: off"
    )
    margin_ratio_step: float = Field(
        default=0.001,
        ge=0,
        lt=1,
        description="a snapshot goes out when the ratio moved by this share, or the level changed",
    )
    ticks_subject: str | None = Field(
        default=None, description="consume capguard ticks from here, e.g. capguard.ticks.>"
    )
    accounts_subject: str | None = Field(default=None, description="consume account records, e.g. capguard.accounts.>")
    accounts_max_age: float = Field(default=30.0, gt=0)
    token_env: str | None = Field(default=None, pattern=_ENV_NAME)

    @field_validator("servers")
    @classmethod
    def _nats(cls, v: list[str]) -> list[str]:
        return [_url(s, ("nats", "tls", "ws", "wss"), "servers") for s in v]


class OrderServiceConfig(Strict):
    """capguard's order service over REST (docs/connectors.md)."""

    url: str
    timeout: float = Field(default=5.0, gt=0, le=60)
    resends: int = Field(default=1, ge=0, le=5, description="resends after a timeout whose lookup found nothing")
    token_env: str | None = Field(default=None, pattern=_ENV_NAME)

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        return _url(v, ("http", "https"), "url").rstrip("/")


class SourcesConfig(Strict):
    """The `[sources]` table. With nothing set, the embedded simulator is the only source."""

    websocket: WebSocketPricesConfig | None = None
    rest_accounts: RestAccountsConfig | None = None
    binance: BinanceConfig | None = None
    nats: NatsConfig | None = None
    risk_center: RiskCenterConfig | None = None


class BrokerConfig(Strict):
    """The `[broker]` table: where protective orders go."""

    kind: Literal["sim", "rest", "binance"] = "sim"
    rest: OrderServiceConfig | None = None

    @model_validator(mode="after")
    def _complete(self) -> BrokerConfig:
        if self.kind == "rest" and self.rest is None:
            raise ValueError("broker kind 'rest' needs a [broker.rest] table with the order service url")
        return self


# ---------------------------------------------------------------------------------- factory
@dataclass
class Sources:
    """Everything `build_sources` made; `start()`/`stop()` run them all."""

    prices: list[PriceSource] = field(default_factory=list)
    accounts: list[AccountSource] = field(default_factory=list)
    risk_center: RiskCenterClient | None = None
    publisher: NatsPublisher | None = None
    binance: BinanceVenue | None = None
    n_instruments: int = 0

    @property
    def price_feed(self) -> MergedPriceSource:
        return MergedPriceSource(self.prices, self.n_instruments)

    async def start(self) -> None:
        if self.publisher is not None:
            await self.publisher.start()
        for p in self.prices:
            await p.start()
        for a in self.accounts:
            await a.start()
        if self.risk_center is not None:
            await self.risk_center.start()

    async def stop(self) -> None:
        if self.risk_center is not None:
            await self.risk_center.stop()
        for a in self.accounts:
            await a.stop()
        for p in self.prices:
            await p.stop()
        if self.binance is not None:
            await self.binance.close()
        if self.publisher is not None:
            await self.publisher.stop()


def _section(model: type[BaseModel], value: Any) -> Any:
    if value is None or isinstance(value, model):
        return value
    return model.model_validate(value)


def build_sources(
    config_section: SourcesConfig | Mapping[str, Any] | None,
    instruments: Sequence[Instrument],
    clock: Clock,
    *,
    env: Mapping[str, str] | None = None,
) -> Sources:
    """Build the configured sources (nothing is started; call `await sources.start()`).

    Missing credentials raise ConnectorError naming the environment variable.
    """
    cfg: SourcesConfig = _section(SourcesConfig, config_section) or SourcesConfig()
    instruments = list(instruments)
    out = Sources(n_instruments=len(instruments))
    if cfg.nats is not None:
        from engine.connectors.nats_bus import NatsAccountSource, NatsPriceSource, NatsPublisher

        out.publisher = NatsPublisher(cfg.nats, clock, env=env)
        if cfg.nats.ticks_subject:
            out.prices.append(NatsPriceSource(cfg.nats, instruments, clock, env=env))
        if cfg.nats.accounts_subject:
            out.accounts.append(NatsAccountSource(cfg.nats, instruments, clock, env=env))
    if cfg.websocket is not None:
        from engine.connectors.ws_prices import WebSocketPriceSource

        out.prices.append(WebSocketPriceSource(cfg.websocket, instruments, clock, env=env))
    if cfg.rest_accounts is not None:
        from engine.connectors.rest_account import RestAccountSource

        out.accounts.append(RestAccountSource(cfg.rest_accounts, instruments, clock, env=env))
    if cfg.binance is not None:
        from engine.connectors.binance import BinanceVenue

        out.binance = BinanceVenue(cfg.binance, instruments, clock, env=env)
        out.prices.append(out.binance.prices)
        if cfg.binance.accounts:
            out.accounts.append(out.binance.accounts)
    if cfg.risk_center is not None:
        from engine.connectors.risk_center import RiskCenterClient, ThresholdPublisher

        publisher = ThresholdPublisher(cfg.risk_center, out.publisher, clock, env=env)
        out.risk_center = RiskCenterClient(cfg.risk_center, clock, publisher=publisher, env=env)
    return out


def build_broker(
    broker_section: BrokerConfig | Mapping[str, Any] | None,
    sources: Sources,
    instruments: Sequence[Instrument],
    clock: Clock,
    *,
    env: Mapping[str, str] | None = None,
) -> Broker | None:
    """The configured broker; None for `kind = "sim"` (the guard keeps its SimBroker)."""
    cfg: BrokerConfig = _section(BrokerConfig, broker_section) or BrokerConfig()
    if cfg.kind == "sim":
        return None
    if cfg.kind == "rest":
        from engine.connectors.order_service import RestBroker

        assert cfg.rest is not None
        return RestBroker(cfg.rest, clock, env=env)
    if sources.binance is None:
        raise ConnectorError("broker kind 'binance' needs a [sources.binance] table with its accounts")
    return sources.binance.broker


def finite_positive(value: Any) -> float:
    """A strictly positive finite number from a JSON number or a decimal string, else Refused."""
    if isinstance(value, bool):
        raise Refused(f"not a number: {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise Refused(f"not a number: {value!r}") from None
    if not (math.isfinite(x) and x > 0):
        raise Refused(f"must be a positive finite number, got {value!r}")
    return x
