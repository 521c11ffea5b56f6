"""RemoteGuardView: the GuardView of a guard running elsewhere (`capguard --connect URL`).

Reads come from the live channels (WebSocket): the risk-status channel keeps a columnar copy
of every account, so `snapshot()` answers at once, from memory, in the same numpy layout as
the embedded guard (engine/view.py SNAPSHOT_COLUMNS). The alerts and actions channels feed a
local EventHub, so `subscribe()` behaves like the embedded one. Account detail, the journal
and every command are plain HTTP calls to /api/v1/capital; the guard checks the role of the
token and journals the command as coming from "api:<this machine>".

Connection state: `connected` is False from the moment a channel drops, or when nothing (not
even a heartbeat, sent every 0.5 s) has arrived for `stale_after` seconds; `last_message_at`
is the wall time of the last message. Every snapshot's summary carries both under
"connection", so the console can show a banner and mark the numbers stale. Channels reconnect
on their own with exponential backoff (0.25 s doubling to `backoff_max`, with jitter); a
reconnect starts from a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import numpy as np
import websockets

from engine.events import EventHub, Subscription
from engine.jsonsafe import clean
from engine.ladder import DataState, TradingState
from engine.levels import LEVEL_NAMES
from engine.model import InputError
from engine.operators import Operator, Role
from engine.view import SNAPSHOT_COLUMNS, AccountsSnapshot, CommandResult

PREFIX = "/api/v1/capital"
CHANNELS = ("risk-status", "alerts", "actions")
_CODES = {
    "level": {n: i for i, n in enumerate(LEVEL_NAMES)},
    "ratio_level": {n: i for i, n in enumerate(LEVEL_NAMES)},
    "data_state": {s.name: int(s) for s in DataState},
    "trading_state": {s.name: int(s) for s in TradingState},
}
_TIMES = ("held_until", "updated_at")
RECENT_KINDS = "decision,order,outcome,operator,alert,transition"

# command -> (method, path template, body fields)
_ROUTES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "deleverage": (
        "POST",
        "/deleverage/{account}",
        ("strategy", "target_ratio", "fraction", "method", "dry_run", "confirm_plan"),
    ),
    "liquidate": ("POST", "/liquidate/{account}", ("confirm", "mode")),
    "set_thresholds": ("POST", "/thresholds/{account}", ("warning", "critical", "liquidation", "reason")),
    "hold": ("POST", "/hold/{account}", ("duration", "reason")),
    "resume": ("POST", "/resume/{account}", ("reason",)),
    "reset": ("POST", "/reset/{account}", ("reason",)),
    "schedule": ("POST", "/schedule", ("account", "action", "at", "in_seconds", "params")),
    "cancel_schedule": ("DELETE", "/schedule/{schedule_id}", ()),
    "kill_switch": ("POST", "/kill-switch", ("engage", "reason")),
    "release_breaker": ("POST", "/breaker/release", ("reason",)),
    "acknowledge": ("POST", "/alerts/{alert_id}/ack", ()),
}


SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "sec-websocket-protocol"})


class RedactSecrets(logging.Filter):
    """Hide header values that carry credentials from a logger's records (the websockets library
    logs every handshake header at DEBUG, the bearer token included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 2 and str(args[0]).lower() in SECRET_HEADERS:
            record.args = (args[0], "[redacted]")
        return True


def redact(*loggers: str) -> None:
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())


_plain = clean  # JSON-safe: numpy scalars to Python, NaN and infinities to None


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class RemoteGuardView:
    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 5.0,
        stale_after: float = 1.5,
        backoff_max: float = 10.0,
        channels: tuple[str, ...] = CHANNELS,
    ) -> None:
        base = url.strip().rstrip("/")
        if "://" not in base:
            base = "http://" + base
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"--connect: {url!r} is not an http(s)://HOST:PORT address")
        self.url = f"{parts.scheme}://{parts.netloc}"
        self.api = self.url + PREFIX
        self.ws_base = f"{'wss' if parts.scheme == 'https' else 'ws'}://{parts.netloc}/ws/capital/"
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        redact("websockets.client")
        self.timeout = timeout
        self.stale_after = stale_after
        self.backoff_max = backoff_max
        self.channels = channels
        self.hub = EventHub()
        self.reconnects = 0
        self.last_error: str | None = None
        self.last_message_at: float | None = None
        self.connected_since: float | None = None
        self._open: dict[str, bool] = dict.fromkeys(channels, False)
        self._seq: dict[str, int] = dict.fromkeys(channels, 0)
        self._seen_ts: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._sockets: dict[str, Any] = {}
        self._closing = False
        self._http = httpx.Client(base_url=self.api, headers=self._headers, timeout=timeout)
        self._ahttp: httpx.AsyncClient | None = None
        # the risk-status state
        self._ids: tuple[str, ...] = ()
        self._names: tuple[str, ...] = ()
        self._desks: tuple[str, ...] = ()
        self._strategies: tuple[str, ...] = ()
        self._index: dict[str, int] = {}
        self._cols: dict[str, np.ndarray] | None = None
        self._version = 0
        self._time = 0.0
        self.summary: dict[str, Any] = {}
        self._time_cache: dict[str, float] = {}

    # ------------------------------------------------------------------ lifecycle
    async def start(self, wait: float | None = None) -> None:
        """Open the live channels; with `wait`, until the first snapshot (or the time is up)."""
        self._ensure_started()
        if wait:
            deadline = time.monotonic() + wait
            while self._cols is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)

    def _ensure_started(self) -> None:
        if self._tasks or self._closing:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not in a loop yet: the first call made from one starts the channels
        self._tasks = [loop.create_task(self._channel(name), name=f"capguard-remote-{name}") for name in self.channels]

    async def aclose(self) -> None:
        self._closing = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._ahttp is not None:
            await self._ahttp.aclose()
        self._http.close()

    # ------------------------------------------------------------------ connection state
    @property
    def connected(self) -> bool:
        if not self._open.get("risk-status", False) or self.last_message_at is None:
            return False
        return time.time() - self.last_message_at < self.stale_after

    def connection(self) -> dict[str, Any]:
        age = None if self.last_message_at is None else round(time.time() - self.last_message_at, 3)
        return {
            "url": self.url,
            "connected": self.connected,
            "last_message_at": self.last_message_at,
            "age_s": age,
            "channels": dict(self._open),
            "reconnects": self.reconnects,
            "error": self.last_error,
        }

    # ------------------------------------------------------------------ channels
    async def _channel(self, name: str) -> None:
        backoff = 0.25
        while not self._closing:
            try:
                async with websockets.connect(
                    self.ws_base + name,
                    additional_headers=self._headers,
                    max_size=None,
                    compression=None,
                    open_timeout=self.timeout,
                    ping_interval=5,
                    ping_timeout=5,
                    close_timeout=1,
                ) as ws:
                    self._sockets[name] = ws
                    self._open[name] = True
                    self._seq[name] = -1  # the snapshot comes first
                    backoff = 0.25
                    if name == "risk-status":
                        self.connected_since = time.time()
                    async for raw in ws:
                        if not self._on_message(name, raw):
                            break  # a gap: reconnect for a fresh snapshot
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{name}: {type(exc).__name__}: {exc}"
            finally:
                self._open[name] = False
                self._sockets.pop(name, None)
            if self._closing:
                return
            self.reconnects += 1
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, self.backoff_max)

    def _on_message(self, channel: str, raw: str | bytes) -> bool:
        self.last_message_at = time.time()
        msg = json.loads(raw)
        kind, seq = msg.get("type"), int(msg.get("seq", 0))
        if kind == "snapshot":
            self._seq[channel] = seq
            if channel == "risk-status":
                self._load_snapshot(msg)
            else:
                self._replay(channel, msg.get("events") or [])
            return True
        if kind == "heartbeat":
            return seq == self._seq[channel]
        if seq != self._seq[channel] + 1:
            self.last_error = f"{channel}: message {seq} after {self._seq[channel]}: resynchronising"
            return False
        self._seq[channel] = seq
        if kind == "delta" and channel == "risk-status":
            self._apply_delta(msg)
        elif kind == "events":
            for e in msg.get("events") or []:
                self._publish(channel, e)
        return True

    def _publish(self, channel: str, event: dict[str, Any]) -> None:
        ts = str(event.get("ts", ""))
        if ts > self._seen_ts.get(channel, ""):
            self._seen_ts[channel] = ts
        self.hub.publish(event)

    def _replay(self, channel: str, events: list[dict[str, Any]]) -> None:
        """After a reconnect, what happened while away (the first snapshot is the journal's past,
        which the console reads through recent_actions)."""
        seen = self._seen_ts.get(channel)
        if seen is None:
            if events:
                self._seen_ts[channel] = str(events[-1].get("ts", ""))
            else:
                self._seen_ts[channel] = ""
            return
        for e in events:
            if str(e.get("ts", "")) > seen:
                self._publish(channel, e)

    def _decode(self, name: str, values: list[Any]) -> np.ndarray:
        if name in _CODES:
            codes = _CODES[name]
            return np.fromiter((codes.get(v, -1) if v is not None else -1 for v in values), np.int8, len(values))
        if name in _TIMES:
            cache = self._time_cache
            if len(cache) > 50_000:
                cache.clear()
            out = np.empty(len(values))
            for i, v in enumerate(values):
                if v is None:
                    out[i] = np.nan
                else:
                    t = cache.get(v)
                    if t is None:
                        t = cache[v] = _epoch(v)
                    out[i] = t
            return out
        return np.array(values, dtype=np.float64)

    def _load_snapshot(self, msg: dict[str, Any]) -> None:
        ids = tuple(msg["ids"])
        cols = {name: self._decode(name, msg["columns"][name]) for name in SNAPSHOT_COLUMNS}
        self._ids, self._names = ids, tuple(msg.get("names") or ids)
        self._desks = tuple(msg.get("desks") or [""] * len(ids))
        self._strategies = tuple(msg.get("strategies") or [""] * len(ids))
        self._index = {a: i for i, a in enumerate(ids)}
        self._cols = cols
        self._stamp(msg)

    def _apply_delta(self, msg: dict[str, Any]) -> None:
        if self._cols is None:
            return
        rows = np.fromiter((self._index.get(a, -1) for a in msg["ids"]), np.int64, len(msg["ids"]))
        known = rows >= 0
        for name in SNAPSHOT_COLUMNS:
            values = self._decode(name, msg["columns"][name])
            self._cols[name][rows[known]] = values[known]
        self._stamp(msg)

    def _stamp(self, msg: dict[str, Any]) -> None:
        self._version = int(msg.get("version", 0))
        with contextlib.suppress(ValueError, TypeError):
            self._time = _epoch(msg["time"])
        if isinstance(msg.get("summary"), dict):
            self.summary = msg["summary"]

    # ------------------------------------------------------------------ GuardView
    def snapshot(self) -> AccountsSnapshot:
        self._ensure_started()
        summary = {**self.summary, "connection": self.connection(), "stale": not self.connected}
        if self._cols is None:
            empty = {name: np.zeros(0, dtype=np.int8 if name in _CODES else np.float64) for name in SNAPSHOT_COLUMNS}
            return AccountsSnapshot(0, time.time(), (), (), (), (), empty, summary)
        return AccountsSnapshot(
            version=self._version,
            time=self._time,
            ids=self._ids,
            names=self._names,
            desks=self._desks,
            strategies=self._strategies,
            columns={k: v.copy() for k, v in self._cols.items()},
            summary=summary,
        )

    def status(self) -> dict[str, Any]:
        return {**self.summary, "connection": self.connection()}

    def subscribe(self, maxsize: int = 1000, kinds: set[str] | None = None) -> Subscription:
        self._ensure_started()
        return self.hub.subscribe(maxsize, kinds)

    def _get(self, path: str, **params: Any) -> Any:
        if self._tasks and not self.connected:
            raise ConnectionError(f"not connected to the guard at {self.url}")
        r = self._http.get(path, params={k: v for k, v in params.items() if v is not None})
        return _answer(r, "GET", path)

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        """A read that needs a body (stress, what-if): nothing changes on the guard."""
        if self._tasks and not self.connected:
            raise ConnectionError(f"not connected to the guard at {self.url}")
        r = self._http.post(path, json={k: _plain(v) for k, v in body.items() if v is not None})
        return _answer(r, "POST", path)

    def account_detail(self, account_id: str) -> dict[str, Any]:
        return self._get(f"/accounts/{quote(account_id, safe='')}")  # type: ignore[no-any-return]

    def recent_actions(self, limit: int = 100) -> list[dict[str, Any]]:
        data = self._get("/journal", kind=RECENT_KINDS, limit=limit, order="desc")
        return list(data["records"])

    # risk analytics (GuardView; the guard computes, under /analytics)
    def book_risk(self) -> dict[str, Any]:
        return self._get("/analytics/book")  # type: ignore[no-any-return]

    def stress(self, scenario: dict[str, Any] | str, top: int = 20) -> dict[str, Any]:
        if isinstance(scenario, str):
            body: dict[str, Any] = {"scenario": scenario}
        elif isinstance(scenario, dict):
            body = dict(scenario)
        else:
            raise InputError(f"scenario: a scenario name or an object with moves/vol_shocks, got {scenario!r}")
        return self._post("/analytics/stress", {**body, "top": top})  # type: ignore[no-any-return]

    def scenario_grid(
        self, account_id: str, price_moves: list[float] | None = None, vol_shocks: list[float] | None = None
    ) -> dict[str, Any]:
        def joined(values: list[float] | None) -> str | None:
            return None if values is None else ",".join(repr(float(x)) for x in values)

        return self._get(  # type: ignore[no-any-return]
            f"/analytics/grid/{quote(account_id, safe='')}",
            price_moves=joined(price_moves),
            vol_shocks=joined(vol_shocks),
        )

    def what_if(
        self, account_id: str, symbol: str, side: str, qty: float, price: float | None = None
    ) -> dict[str, Any]:
        body = {"symbol": symbol, "side": side, "qty": qty, "price": price}
        return self._post(f"/analytics/what-if/{quote(account_id, safe='')}", body)  # type: ignore[no-any-return]

    def whoami(self) -> Operator:
        """The operator this token is, as the guard sees it (viewer when no token is configured)."""
        r = self._http.get("/whoami")
        if r.status_code >= 400:
            raise PermissionError(f"{self.url}: {r.status_code} {_detail(r)}")
        data = r.json()
        return Operator(data.get("name") or "anonymous", Role[str(data.get("role", "viewer")).upper()], "remote")

    async def command(self, name: str, operator: Operator, **params: Any) -> CommandResult:
        """The matching POST/DELETE. `operator` is informational: the guard acts as the token's
        operator (its name and role), never as what a client claims."""
        route = _ROUTES.get(name)
        if route is None:
            return CommandResult(False, f"unknown command {name!r} (known: {', '.join(sorted(_ROUTES))})")
        method, template, fields = route
        params = dict(params)
        if name == "acknowledge" and "alert_id" not in params and params.get("alert_seq") is not None:
            params["alert_id"] = f"al{params['alert_seq']}"
        if name == "schedule" and isinstance(params.get("at"), int | float):
            params["at"] = datetime.fromtimestamp(float(params["at"]), tz=UTC).isoformat()
        try:
            path = template.format(
                **{k: quote(str(params[k]), safe="") for k in ("account", "schedule_id", "alert_id") if k in params}
            )
        except KeyError as exc:
            return CommandResult(False, f"{exc.args[0]} is required")
        body = {k: _plain(params[k]) for k in fields if params.get(k) is not None}
        if self._ahttp is None:
            self._ahttp = httpx.AsyncClient(base_url=self.api, headers=self._headers, timeout=self.timeout)
        try:
            r = await self._ahttp.request(method, path, json=body if method != "DELETE" else None)
        except httpx.TimeoutException:
            return CommandResult(False, f"{name}: no answer from {self.url}: check the journal before trying again")
        except httpx.HTTPError as exc:
            return CommandResult(False, f"{name}: not sent, {self.url} unreachable ({type(exc).__name__})")
        try:
            data = r.json()
        except ValueError:
            data = {}
        if r.status_code < 300:
            return CommandResult(
                bool(data.get("ok")), str(data.get("message", "")), data.get("action_id"), data.get("plan")
            )
        return CommandResult(False, str(data.get("message") or _detail(r)), data.get("action_id"), data.get("plan"))


def _answer(r: httpx.Response, method: str, path: str) -> Any:
    """The JSON of a read; 404 is KeyError, 422 InputError (as the embedded guard raises them)."""
    if r.status_code == 404:
        raise KeyError(_detail(r))
    if r.status_code == 422:
        raise InputError(_detail(r))
    if r.status_code >= 400:
        raise RuntimeError(f"{method} {path}: {r.status_code} {_detail(r)}")
    return r.json()


def _detail(r: httpx.Response) -> str:
    try:
        data = r.json()
    except ValueError:
        return r.text[:200]
    detail = data.get("detail") if isinstance(data, dict) else None
    return str(detail if detail is not None else data)
