"""Live channels: one broadcaster task per channel, per-client bounded queues.

Each publish tick a broadcaster computes what changed, serialises it ONCE, and offers the same
text to every client's queue; a sender task per client writes it out. Nothing here ever waits
on a client: a client whose queue is full is coalesced (its queue is dropped and it is sent a
fresh snapshot of the latest state when it catches up), and one whose single send stalls for
SEND_TIMEOUT seconds is disconnected. The engine never slows down for a viewer.

risk-status     snapshot of every account's SNAPSHOT_COLUMNS, then deltas: accounts whose level,
                thresholds, data/trading state or hold changed, or whose ratio moved by at least
                `ratio_step` (a fraction of the ratio last published for it); such a row carries
                all its current values
margin-updates  equity, initial/maintenance/free margin, ratio, utilisation: every change
alerts          guard events `alert` and `ack` (snapshot: the recent alerts from the journal)
actions         guard events `action`, `transition` and `data` (snapshot: from the journal)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.clock import iso
from engine.jsonsafe import clean
from engine.ladder import DataState, TradingState
from engine.levels import LEVEL_NAMES
from engine.view import SNAPSHOT_COLUMNS, AccountsSnapshot

if TYPE_CHECKING:
    from engine.guard import Guard

log = logging.getLogger("capguard.api")

HEARTBEAT_S = 0.5  # a channel with nothing to say still speaks this often (clients detect loss)
SEND_TIMEOUT = 10.0  # a single send stalled this long: the client is dropped
BIG = 1000  # payloads with more rows than this are serialised off the event loop
EVENTS_SNAPSHOT = 100  # journal records in an alerts/actions snapshot

_LEVELS = np.array([*LEVEL_NAMES, None], dtype=object)  # index -1 -> None
_DATA = np.array([s.name for s in DataState], dtype=object)
_TRADING = np.array([s.name for s in TradingState], dtype=object)

RISK_COLUMNS = SNAPSHOT_COLUMNS  # the same columns as the embedded view, so the remote view rebuilds it
MARGIN_COLUMNS = ("equity", "maintenance_margin", "initial_margin", "free_margin", "margin_ratio", "utilization")
DECIMALS = {
    "equity": 2,
    "maintenance_margin": 2,
    "initial_margin": 2,
    "free_margin": 2,
    "margin_ratio": 6,
    "utilization": 6,
    "leverage": 4,
    "worst_liq_distance_pct": 4,
    "warning": 6,
    "critical": 6,
    "liquidation": 6,
}
ALERT_TYPES = frozenset({"alert", "ack"})
ACTION_TYPES = frozenset({"action", "transition", "data"})


def dumps(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False, ensure_ascii=False)


# ---------------------------------------------------------------------------- column encoding
def numbers(arr: np.ndarray, decimals: int) -> list[float | None]:
    vals = np.round(np.asarray(arr, dtype=np.float64), decimals)
    out = vals.tolist()
    bad = np.flatnonzero(~np.isfinite(vals))
    for i in bad.tolist():
        out[i] = None
    return out


def times(arr: np.ndarray, valid: np.ndarray | None = None) -> list[str | None]:
    arr = np.asarray(arr, dtype=np.float64)
    ok = np.isfinite(arr) if valid is None else (valid & np.isfinite(arr))
    out = np.full(arr.size, None, dtype=object)
    idx = np.flatnonzero(ok)
    if idx.size:
        uniq, inverse = np.unique(arr[idx], return_inverse=True)
        out[idx] = np.array([iso(float(u)) for u in uniq], dtype=object)[inverse]
    return out.tolist()


def encode_columns(cols: dict[str, np.ndarray], names: tuple[str, ...], now: float) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for name in names:
        arr = cols[name]
        if name in ("level", "ratio_level"):
            codes = np.asarray(arr, dtype=np.int64)
            out[name] = _LEVELS[np.where((codes < 0) | (codes >= len(LEVEL_NAMES)), len(LEVEL_NAMES), codes)].tolist()
        elif name == "data_state":
            out[name] = _DATA[np.clip(np.asarray(arr, dtype=np.int64), 0, len(_DATA) - 1)].tolist()
        elif name == "trading_state":
            out[name] = _TRADING[np.clip(np.asarray(arr, dtype=np.int64), 0, len(_TRADING) - 1)].tolist()
        elif name == "held_until":
            out[name] = times(arr, np.asarray(arr, dtype=np.float64) > now)
        elif name == "updated_at":
            out[name] = times(arr)
        else:
            out[name] = numbers(arr, DECIMALS.get(name, 6))
    return out


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise a != b where NaN equals NaN."""
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        return (a != b) & ~(np.isnan(a) & np.isnan(b))
    return a != b


# ---------------------------------------------------------------------------- shared reads
class Source:
    """The guard's snapshot (and per-position liquidation prices), computed at most once per
    engine version or command: every channel and REST read in between shares it."""

    def __init__(self, guard: Guard) -> None:
        self.g = guard
        self.bump = 0
        self._snap_key: tuple[int, int, int] | None = None
        self._snap: AccountsSnapshot | None = None
        self._liq_key: tuple[int, int, int] | None = None
        self._liq = np.zeros(0)
        self._reserved_key: tuple[int, int, int] | None = None
        self._reserved = np.zeros(0)

    @property
    def key(self) -> tuple[int, int, int]:
        # A new evaluation, a command through the API, or anything journaled (fills and orders
        # between evaluations are) means the state may have moved.
        return (int(self.g.version), self.bump, self.g.journal.head()[0])

    def invalidate(self) -> None:
        self.bump += 1

    def snapshot(self) -> AccountsSnapshot:
        key = self.key
        if key != self._snap_key or self._snap is None:
            self._snap = self.g.snapshot()
            self._snap_key = key
        return self._snap

    def liquidation_prices(self) -> np.ndarray:
        key = self.key
        if key != self._liq_key:
            self._liq = self.g.book.liquidation_prices()
            self._liq_key = key
        return self._liq

    def reserved_initial_margin(self) -> np.ndarray:
        key = self.key
        if key != self._reserved_key:
            self._reserved = self.g.book.reserved_initial_margin()
            self._reserved_key = key
        return self._reserved

    def margin_columns(self) -> dict[str, np.ndarray]:
        book = self.g.book
        equity = book.equity.copy()
        im = np.asarray(book.acct_im, dtype=np.float64).copy()
        with np.errstate(divide="ignore", invalid="ignore"):
            util = np.where(equity > 0, im / equity, np.nan)
        return {
            "equity": equity,
            "maintenance_margin": book.acct_mm.copy(),
            "initial_margin": im,
            "free_margin": equity - im,
            "margin_ratio": book.ratio.copy(),
            "utilization": util,
        }


# ---------------------------------------------------------------------------- clients and channels
class Client:
    def __init__(self, maxsize: int) -> None:
        self.queue: deque[str] = deque()
        self.maxsize = maxsize
        self.resync = True  # the first message is a snapshot
        self.wakeup = asyncio.Event()
        self.coalesced = 0
        self.sent = 0

    def offer(self, text: str) -> None:
        if self.resync:
            return  # it will get a fresh snapshot, which includes this
        if len(self.queue) >= self.maxsize:
            self.queue.clear()
            self.resync = True
            self.coalesced += 1
        else:
            self.queue.append(text)
        self.wakeup.set()

    async def next(self, channel: Channel) -> str:
        while True:
            if self.resync:
                self.resync = False
                self.queue.clear()
                return await channel.snapshot_text()
            if self.queue:
                return self.queue.popleft()
            self.wakeup.clear()
            await self.wakeup.wait()


class Channel:
    name = ""

    def __init__(self, source: Source, *, hz: float, queue: int) -> None:
        self.source = source
        self.g = source.g
        self.interval = 1.0 / hz
        self.queue_size = queue
        self.clients: set[Client] = set()
        self.seq = 0
        self.messages = 0  # texts published (each sent to every client)
        self.coalesced = 0
        self.dropped_clients = 0
        self._task: asyncio.Task[None] | None = None
        self._snap_key: Any = None
        self._snap_text: asyncio.Future[str] | None = None
        self._last_sent = 0.0
        self.publish_seconds: deque[float] = deque(maxlen=240)

    # -- lifecycle
    def ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self.start()
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"capguard-ws-{self.name}")

    def start(self) -> None:
        """Take the initial state (called once, before the first client joins)."""

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        for c in self.clients:
            c.wakeup.set()

    def join(self) -> Client:
        self.ensure_running()
        self.flush()
        client = Client(self.queue_size)
        self.clients.add(client)
        return client

    def leave(self, client: Client) -> None:
        self.clients.discard(client)
        self.coalesced += client.coalesced

    # -- publishing
    async def _run(self) -> None:
        next_at = time.monotonic()
        while True:
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind (a long engine step): do not try to catch up
                next_at = time.monotonic()
                delay = 0
            await asyncio.sleep(delay)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # a broken publish must not end the channel
                log.exception("publishing on %s failed", self.name)

    async def tick(self) -> None:
        started = time.perf_counter()
        payload = self.compute()
        if payload is not None:
            self.seq += 1
            payload["seq"] = self.seq
            self._send(await self.encode(payload))
            self.publish_seconds.append(time.perf_counter() - started)
        elif time.monotonic() - self._last_sent >= HEARTBEAT_S and self.clients:
            now = self.g.clock.now()
            self._send(dumps({"type": "heartbeat", "channel": self.name, "seq": self.seq, "time": iso(now)}))

    def flush(self) -> None:
        """Publish what is pending now (before a client joins, so its snapshot and the next
        message do not overlap)."""

    def compute(self) -> dict[str, Any] | None:
        raise NotImplementedError

    def snapshot_payload(self) -> dict[str, Any]:
        raise NotImplementedError

    def _snapshot_key(self) -> Any:
        return self.seq

    async def encode(self, payload: dict[str, Any]) -> str:
        if len(payload.get("ids") or ()) > BIG:
            return await asyncio.to_thread(dumps, payload)
        return dumps(payload)

    def _send(self, text: str) -> None:
        self._last_sent = time.monotonic()
        self.messages += 1
        for c in tuple(self.clients):
            c.offer(text)

    async def snapshot_text(self) -> str:
        """The snapshot of the state the next delta applies to; serialised once per state."""
        key = self._snapshot_key()
        if self._snap_text is None or self._snap_key != key:
            self._snap_key = key
            fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self._snap_text = fut
            try:
                payload = self.snapshot_payload()
                payload["seq"] = self.seq
                fut.set_result(await self.encode(payload))
            except BaseException as exc:
                fut.set_exception(exc)
                self._snap_text = None
                raise
        return await asyncio.shield(self._snap_text)

    @property
    def client_count(self) -> int:
        return len(self.clients)

    def coalesced_total(self) -> int:
        return self.coalesced + sum(c.coalesced for c in self.clients)


class _ColumnChannel(Channel):
    """A channel over per-account columns: `prev` holds what clients have been sent."""

    columns: tuple[str, ...] = ()

    def __init__(self, source: Source, *, hz: float, queue: int) -> None:
        super().__init__(source, hz=hz, queue=queue)
        self.prev: dict[str, np.ndarray] | None = None
        self._key: Any = None
        self.version = 0
        self.time = 0.0
        self.rows_sent: deque[int] = deque(maxlen=240)

    def current(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def changed_rows(self, now: dict[str, np.ndarray], prev: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def start(self) -> None:
        self.prev = {k: v.copy() for k, v in self.current().items()}
        self._key = self.source.key
        self.version = int(self.g.version)
        self.time = self.g.clock.now()

    def compute(self) -> dict[str, Any] | None:
        key = self.source.key
        if key == self._key and not self.hold_expired():
            return None
        self._key = key
        cur = self.current()
        assert self.prev is not None
        if any(v.shape != self.prev[k].shape for k, v in cur.items()):
            # Accounts were added (a new account in a source's snapshot): rows no longer line
            # up, so every client gets a fresh snapshot instead of a delta.
            self.prev = {k: v.copy() for k, v in cur.items()}
            self.version, self.time = int(self.g.version), self.g.clock.now()
            self.seq += 1
            for c in tuple(self.clients):
                c.resync = True
                c.wakeup.set()
            return None
        rows = self.changed_rows(cur, self.prev)
        self.version = int(self.g.version)
        self.time = self.g.clock.now()
        if not rows.size:
            return None
        for k, v in cur.items():
            self.prev[k][rows] = v[rows]
        self.rows_sent.append(int(rows.size))
        return self.payload("delta", rows)

    def hold_expired(self) -> bool:
        """A published hold has ended (which changes the state without a new engine version)."""
        return False

    def _snapshot_key(self) -> Any:
        return self.seq

    def snapshot_payload(self) -> dict[str, Any]:
        return self.payload("snapshot", None)

    def payload(self, kind: str, rows: np.ndarray | None) -> dict[str, Any]:
        assert self.prev is not None
        cols = self.prev if rows is None else {k: v[rows] for k, v in self.prev.items()}
        ids = self.source.snapshot().ids
        return {
            "type": kind,
            "channel": self.name,
            "seq": self.seq,
            "time": iso(self.time),
            "version": self.version,
            "ids": list(ids) if rows is None else [ids[i] for i in rows.tolist()],
            "columns": encode_columns(cols, self.columns, self.g.clock.now()),
        }


class RiskStatusChannel(_ColumnChannel):
    name = "risk-status"
    columns = RISK_COLUMNS
    triggers = ("level", "ratio_level", "data_state", "trading_state", "warning", "critical", "liquidation")

    def __init__(self, source: Source, *, hz: float, queue: int, ratio_step: float) -> None:
        super().__init__(source, hz=hz, queue=queue)
        self.ratio_step = ratio_step
        self.summary: dict[str, Any] = {}

    def current(self) -> dict[str, np.ndarray]:
        snap = self.source.snapshot()
        self.summary = snap.summary
        cols = {k: np.asarray(snap.columns[k]) for k in RISK_COLUMNS}
        # An expired hold is no hold: publish it as none (NaN), so it changes when it ends.
        held = cols["held_until"].astype(np.float64)
        cols["held_until"] = np.where(held > self.g.clock.now(), held, np.nan)
        return cols

    def hold_expired(self) -> bool:
        assert self.prev is not None
        held = self.prev["held_until"]
        with np.errstate(invalid="ignore"):
            return bool(np.any(held <= self.g.clock.now()))

    def changed_rows(self, now: dict[str, np.ndarray], prev: dict[str, np.ndarray]) -> np.ndarray:
        mask = np.zeros(len(now["level"]), dtype=bool)
        for k in (*self.triggers, "held_until"):
            mask |= _changed(now[k], prev[k])
        r, p = now["margin_ratio"], prev["margin_ratio"]
        with np.errstate(invalid="ignore"):
            # Relative: an account at ratio 20 moving by 0.01 says nothing; one at 1.3 does.
            moved = np.abs(r - p) >= self.ratio_step * np.abs(p) if self.ratio_step > 0 else _changed(r, p)
        mask |= moved | (np.isnan(r) != np.isnan(p))
        return np.flatnonzero(mask)

    def payload(self, kind: str, rows: np.ndarray | None) -> dict[str, Any]:
        out = super().payload(kind, rows)
        if kind == "snapshot":
            snap = self.source.snapshot()
            out["names"], out["desks"], out["strategies"] = list(snap.names), list(snap.desks), list(snap.strategies)
        out["summary"] = clean(self.summary or self.g.status())
        return out


class MarginChannel(_ColumnChannel):
    name = "margin-updates"
    columns = MARGIN_COLUMNS

    def current(self) -> dict[str, np.ndarray]:
        return self.source.margin_columns()

    def changed_rows(self, now: dict[str, np.ndarray], prev: dict[str, np.ndarray]) -> np.ndarray:
        mask = np.zeros(len(now["equity"]), dtype=bool)
        for k in ("equity", "maintenance_margin", "initial_margin", "margin_ratio"):
            mask |= _changed(np.round(now[k], DECIMALS[k]), np.round(prev[k], DECIMALS[k]))
        return np.flatnonzero(mask)


class EventsChannel(Channel):
    """Engine events of some types, batched per publish tick."""

    def __init__(self, source: Source, name: str, types: frozenset[str], *, hz: float, queue: int) -> None:
        super().__init__(source, hz=hz, queue=queue)
        self.name = name
        self.types = types
        self._sub: Any = None
        self.events = 0

    def start(self) -> None:
        self._sub = self.g.subscribe(maxsize=10_000, kinds=set(self.types))

    async def stop(self) -> None:
        await super().stop()
        if self._sub is not None:
            self._sub.close()
            self._sub = None

    def flush(self) -> None:
        payload = self.compute()
        if payload is not None:
            self.seq += 1
            payload["seq"] = self.seq
            self._send(dumps(payload))

    def compute(self) -> dict[str, Any] | None:
        if self._sub is None:
            return None
        events = self._sub.drain()
        if not events or not self.clients:
            return None
        self.events += len(events)
        return {
            "type": "events",
            "channel": self.name,
            "seq": self.seq,
            "time": iso(self.g.clock.now()),
            "events": [clean(e) for e in events],
        }

    def _snapshot_key(self) -> Any:
        return (self.seq, self.g.journal.head()[0])

    def snapshot_payload(self) -> dict[str, Any]:
        return {
            "type": "snapshot",
            "channel": self.name,
            "seq": self.seq,
            "time": iso(self.g.clock.now()),
            "events": recent_events(self.g, self.name, EVENTS_SNAPSHOT),
        }


def recent_events(g: Guard, channel: str, limit: int) -> list[dict[str, Any]]:
    """Recent journal records shaped like the channel's events (oldest first)."""
    out: list[dict[str, Any]] = []
    if channel == "alerts":
        acked = g.protection.acknowledged
        for r in reversed(g.journal.records(kind="alert", limit=limit, newest_first=True)):
            out.append({**r, "type": "alert", "acknowledged": r.get("alert_id") in acked})
    else:
        kinds = ["transition", "decision", "outcome", "data_state"]
        mapping = {"transition": "transition", "data_state": "data", "decision": "action", "outcome": "action"}
        for r in reversed(g.journal.records(kind=kinds, limit=limit, newest_first=True)):
            out.append({**r, "type": mapping[r["kind"]]})
    return [clean(e) for e in out]
