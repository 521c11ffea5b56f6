"""NATS (optional, nats-py): guard events out; ticks and account updates in.

NATS is never on the protective order path: orders go only through the broker.

Subjects (prefix `capguard`, configurable; an account id becomes one subject token, any
character outside [A-Za-z0-9_-] replaced by `_`):

    capguard.risk.<account>     transition and data-state events             core NATS
    capguard.margin.<account>   margin snapshots (the guard, on change)     core NATS
    capguard.alerts             alerts and acknowledgements                   JetStream
    capguard.actions            protective actions, by stage                  JetStream
    capguard.thresholds         threshold changes                            JetStream

JetStream messages carry `Nats-Msg-Id` (alert: the alert id; acknowledgement: `<alert id>:ack:<ts>`;
action: `<action id>:<stage>`; threshold change: its change id), so a republish within the
stream's duplicate window is stored once. The stream (`CAPGUARD`, file storage) is created
if missing. Events wait in an ordered outbox; a JetStream publish is retried with backoff
until the server acknowledges it, so a NATS restart mid-stream loses nothing. The client
reconnects forever (max_reconnect_attempts = -1) and keeps trying its first connect too.

Inbound, `NatsPriceSource` takes capguard ticks (engine/connectors/ticks.py) from
`ticks_subject`, and `NatsAccountSource` takes account records from `accounts_subject`:
    {"version": 1, "as_of": "<ISO-8601 UTC>", "account": <engine.model.Account>}
(a publisher re-sends each account at least every `accounts_max_age` / 2 as a heartbeat).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import AwareDatetime, ValidationError

from engine.clock import Clock, iso
from engine.connectors.base import (
    AccountSourceBase,
    Backoff,
    ConnectorError,
    NatsConfig,
    PriceSourceBase,
    Refused,
    Strict,
    describe_errors,
    secret_from_env,
)
from engine.connectors.ticks import decode, parse_ticks
from engine.events import Subscription
from engine.jsonsafe import clean
from engine.ladder import DataState
from engine.model import Account, Instrument

log = logging.getLogger("capguard.connectors.nats")

try:  # optional dependency
    import nats
    import nats.errors
    import nats.js.errors
    from nats.js import api as js_api

    HAVE_NATS = True
except ImportError:  # pragma: no cover - exercised only without nats-py
    nats = None  # type: ignore[assignment]
    HAVE_NATS = False


def require_nats() -> None:
    if not HAVE_NATS:
        raise ConnectorError("[sources.nats] needs the nats-py package (pip install nats-py)")


_BAD = re.compile(r"[^A-Za-z0-9_-]")


def token(value: Any) -> str:
    """One NATS subject token from an account id."""
    return _BAD.sub("_", str(value)) or "_"


def route(event: Mapping[str, Any], prefix: str = "capguard") -> tuple[str, str | None] | None:
    """(subject, Nats-Msg-Id or None for core NATS) for a guard event; None: not published."""
    kind = event.get("type")
    account = event.get("account")
    if kind in ("transition", "data"):
        return f"{prefix}.risk.{token(account or 'book')}", None
    if kind == "margin":
        return f"{prefix}.margin.{token(account or 'book')}", None
    if kind == "alert":
        return f"{prefix}.alerts", str(event.get("alert_id") or f"alert:{account}:{event.get('ts')}")
    if kind == "ack":
        return f"{prefix}.alerts", f"{event.get('alert_id')}:ack:{event.get('ts')}"
    if kind == "action":
        stage = event.get("stage")
        action_id = event.get("action_id")
        msg_id = f"{action_id}:{stage}" if action_id else f"{account}:{stage}:{event.get('ts')}"
        return f"{prefix}.actions", msg_id
    if kind == "thresholds":
        return f"{prefix}.thresholds", str(event.get("change_id") or f"thresholds:{event.get('ts')}")
    return None


class NatsLink:
    """One nats-py connection that keeps trying its first connect and reconnects forever."""

    def __init__(
        self,
        config: NatsConfig,
        role: str,
        *,
        env: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
        on_connect: Callable[[Any], Awaitable[None]] | None = None,
    ) -> None:
        require_nats()
        self.config = config
        self.role = role
        self.nc: Any = None
        self._backoff = Backoff(config.backoff, rng)
        self._token = secret_from_env(config.token_env, env, "NATS token") if config.token_env else None
        self._on_connect = on_connect
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.disconnects = 0
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._connect_loop(), name=f"nats:{self.role}")

    async def wait_ready(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _connect_loop(self) -> None:
        cfg = self.config
        while True:
            try:
                nc = await nats.connect(
                    servers=list(cfg.servers),
                    name=f"{cfg.name}-{self.role}",
                    connect_timeout=cfg.connect_timeout,
                    reconnect_time_wait=cfg.reconnect_time_wait,
                    max_reconnect_attempts=-1,  # reconnect forever
                    allow_reconnect=True,
                    ping_interval=10,
                    max_outstanding_pings=3,
                    token=self._token,
                    error_cb=self._error,
                    disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = self._backoff.next()
                log.warning("nats %s: connect failed (%s); retrying in %.2fs", self.role, exc, delay)
                await asyncio.sleep(delay)
                continue
            self.nc = nc
            self._backoff.reset()
            if self._on_connect is not None:
                try:
                    await self._on_connect(nc)
                except Exception as exc:
                    log.warning("nats %s: setup after connect failed: %s", self.role, exc)
            self._ready.set()
            log.info("nats %s: connected", self.role)
            return

    async def _error(self, exc: Exception) -> None:
        log.debug("nats %s: %s", self.role, exc)

    async def _disconnected(self) -> None:
        self.disconnects += 1
        log.warning("nats %s: disconnected", self.role)

    async def _reconnected(self) -> None:
        self.reconnects += 1
        log.info("nats %s: reconnected", self.role)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.close(), timeout=2.0)
            self.nc = None
        self._ready.clear()


class NatsPublisher:
    """Publishes guard events on the documented subjects; `run(subscription)` consumes the hub."""

    def __init__(
        self,
        config: NatsConfig,
        clock: Clock,
        *,
        env: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.prefix = config.subject_prefix
        self.link = NatsLink(config, "publisher", env=env, rng=rng, on_connect=self._setup)
        self.js: Any = None
        self._outbox: deque[tuple[str, bytes, str | None]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._backoff = Backoff(config.backoff, rng)
        self._worker: asyncio.Task[None] | None = None
        self._stopping = False
        self.counters = {"queued": 0, "core": 0, "acked": 0, "duplicates": 0, "retries": 0, "dropped": 0}

    # setup ----------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.link.connected

    @property
    def stream_subjects(self) -> list[str]:
        p = self.prefix
        return [f"{p}.alerts", f"{p}.actions", f"{p}.thresholds"]

    async def _setup(self, nc: Any) -> None:
        self.js = nc.jetstream(timeout=self.config.publish_timeout)
        await self.ensure_stream()

    async def ensure_stream(self) -> None:
        cfg = js_api.StreamConfig(
            name=self.config.stream,
            subjects=self.stream_subjects,
            storage=js_api.StorageType.FILE if self.config.storage == "file" else js_api.StorageType.MEMORY,
            duplicate_window=self.config.duplicate_window,
            max_age=self.config.max_age,
        )
        try:
            await self.js.add_stream(cfg)
        except nats.js.errors.BadRequestError:
            # the stream exists (possibly with other settings): bring it to ours
            await self.js.update_stream(cfg)

    async def start(self) -> None:
        self._stopping = False
        self.link.start()
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._drain_outbox(), name="nats:outbox")

    async def stop(self, grace: float = 2.0) -> None:
        """Give queued events up to `grace` seconds to go out, then close."""
        if self._outbox and self.link.connected:
            await self.flush(grace)
        self._stopping = True
        self._wake.set()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._worker
            self._worker = None
        await self.link.close()

    # publishing -------------------------------------------------------------------------
    def enqueue(self, event: Mapping[str, Any]) -> bool:
        """Queue one guard event for its subject; False when it is not published or was dropped."""
        where = route(event, self.prefix)
        if where is None:
            return False
        if len(self._outbox) >= self.config.outbox:
            self.counters["dropped"] += 1
            log.error(
                "nats outbox full (%d): dropped %s event",
                len(self._outbox),
                event.get("type"),
                extra={"event": {"event": "nats_dropped", "type": event.get("type")}},
            )
            return False
        subject, msg_id = where
        payload = json.dumps(clean(dict(event)), default=str, separators=(",", ":"), allow_nan=False).encode()
        self._outbox.append((subject, payload, msg_id))
        self.counters["queued"] += 1
        self._idle.clear()
        self._wake.set()
        return True

    def publish_thresholds(self, change: Mapping[str, Any]) -> bool:
        return self.enqueue({"type": "thresholds", **change})

    def publish_margin(self, account: str, **fields: Any) -> bool:
        return self.enqueue({"type": "margin", "account": account, **fields})

    async def run(self, subscription: Subscription) -> None:
        """Consume an EventHub subscription until it is closed or this task is cancelled."""
        async for event in subscription:
            self.enqueue(dict(event))

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued event is out (acknowledged for JetStream)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @property
    def pending(self) -> int:
        return len(self._outbox)

    async def _drain_outbox(self) -> None:
        while not self._stopping:
            if not self._outbox:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self.link.connected or self.js is None:
                await asyncio.sleep(0.05)
                continue
            subject, payload, msg_id = self._outbox[0]
            try:
                if msg_id is None:
                    await self.link.nc.publish(subject, payload)
                    self.counters["core"] += 1
                else:
                    ack = await self.js.publish(
                        subject, payload, timeout=self.config.publish_timeout, headers={"Nats-Msg-Id": msg_id}
                    )
                    self.counters["acked"] += 1
                    if ack.duplicate:
                        self.counters["duplicates"] += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.counters["retries"] += 1
                if HAVE_NATS and isinstance(exc, nats.js.errors.NoStreamResponseError) and self.link.connected:
                    with contextlib.suppress(Exception):
                        await self.ensure_stream()
                delay = self._backoff.next()
                log.debug("nats publish to %s failed (%s); retry in %.2fs", subject, type(exc).__name__, delay)
                await asyncio.sleep(delay)
                continue
            self._backoff.reset()
            self._outbox.popleft()


class NatsPriceSource(PriceSourceBase):
    """capguard ticks from a NATS subject (another PriceSource)."""

    def __init__(
        self,
        config: NatsConfig,
        instruments: Sequence[Instrument] | Sequence[str],
        clock: Clock,
        *,
        env: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
        name: str = "nats_ticks",
    ) -> None:
        super().__init__(name, instruments, clock)
        if not config.ticks_subject:
            raise ConnectorError("NatsPriceSource needs nats.ticks_subject")
        self.subject = config.ticks_subject
        self.link = NatsLink(config, "ticks", env=env, rng=rng, on_connect=self._subscribe)

    async def _subscribe(self, nc: Any) -> None:
        await nc.subscribe(self.subject, cb=self._on_msg)  # nats-py resubscribes after a reconnect
        await nc.flush()  # the server has the subscription before we call ourselves ready
        self.counters["connects"] += 1

    @property
    def connected(self) -> bool:
        return self.link.connected

    async def start(self) -> None:
        self.link.start()

    async def stop(self) -> None:
        await self.link.close()

    async def _on_msg(self, msg: Any) -> None:
        self.counters["messages"] += 1
        try:
            items, ignored = parse_ticks(decode(msg.data), self.index)
        except Refused as exc:
            self.refuse(f"message on {msg.subject}", str(exc))
            return
        self.counters["ignored"] += ignored
        if items:
            self.accept(items)


class AccountMessage(Strict):
    version: Literal[1]
    as_of: AwareDatetime
    account: Account


class NatsAccountSource(AccountSourceBase):
    """Account records (balances, positions, open orders) pushed on a NATS subject."""

    def __init__(
        self,
        config: NatsConfig,
        instruments: Sequence[Instrument] | Sequence[str],
        clock: Clock,
        *,
        env: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
        name: str = "nats_accounts",
    ) -> None:
        super().__init__(name, instruments, clock, config.accounts_max_age)
        if not config.accounts_subject:
            raise ConnectorError("NatsAccountSource needs nats.accounts_subject")
        self.subject = config.accounts_subject
        self.link = NatsLink(config, "accounts", env=env, rng=rng, on_connect=self._subscribe)
        self._accounts: dict[str, Account] = {}
        self._updated: dict[str, float] = {}

    async def _subscribe(self, nc: Any) -> None:
        await nc.subscribe(self.subject, cb=self._on_msg)
        await nc.flush()

    async def start(self) -> None:
        self.link.start()

    async def stop(self) -> None:
        await self.link.close()

    async def refresh(self) -> bool:
        """Push source: nothing to poll; True while every known account is fresh."""
        return self.data_state(self.clock.now()) == DataState.OK

    def data_state(self, now: float) -> DataState:
        """STALE also when any one account has not been re-sent within max_age."""
        if self._updated and now - min(self._updated.values()) > self.max_age:
            return DataState.STALE
        return super().data_state(now)

    async def _on_msg(self, msg: Any) -> None:
        self.counters["polls"] += 1
        try:
            data = decode(msg.data)
            try:
                message = AccountMessage.model_validate(data)
            except ValidationError as exc:
                raise Refused(describe_errors(exc)) from None
            (account,) = self.check_accounts([message.account])
        except Refused as exc:
            self.refused(f"account message on {msg.subject}", str(exc))
            return
        self._accounts[account.id] = account
        self._updated[account.id] = self.clock.now()
        self.apply(tuple(self._accounts[k] for k in sorted(self._accounts)), as_of=iso(message.as_of.timestamp()))
