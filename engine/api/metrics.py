"""GET /metrics: Prometheus text exposition (version 0.0.4), written by hand.

Also the Monitor: a small task that measures the event loop's latency (how late a short sleep
wakes up: anything that blocks the loop, the guard's included, shows here) and counts the
engine's events for the counters below.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.ladder import DataState
from engine.levels import LEVEL_NAMES

if TYPE_CHECKING:
    from engine.api.app import ApiState

PROBE_S = 0.05
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


class Monitor:
    def __init__(self, guard: Any) -> None:
        self.g = guard
        self.lag: deque[float] = deque(maxlen=1200)  # the last minute of probes
        self.actions: Counter[tuple[str, str]] = Counter()
        self.alerts: Counter[tuple[str, str]] = Counter()
        self.transitions: Counter[str] = Counter()
        self.started = time.time()
        self._task: asyncio.Task[None] | None = None
        self._sub: Any = None

    def start(self) -> None:
        if self._task is None:
            self._sub = self.g.subscribe(maxsize=100_000, kinds={"action", "alert", "transition"})
            self._task = asyncio.get_running_loop().create_task(self._run(), name="capguard-api-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._sub is not None:
            self._sub.close()
            self._sub = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(PROBE_S)
            self.lag.append(max(0.0, loop.time() - before - PROBE_S))
            self.count()

    def count(self) -> None:
        if self._sub is None:
            return
        for e in self._sub.drain():
            t = e.get("type")
            if t == "action":
                self.actions[(str(e.get("stage", "")), str(e.get("kind", "")))] += 1
            elif t == "alert":
                self.alerts[(str(e.get("severity", "")), str(e.get("category", "")))] += 1
            elif t == "transition":
                self.transitions[str(e.get("to_level", ""))] += 1

    def lag_quantiles(self) -> dict[str, float]:
        if not self.lag:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0}
        a = np.fromiter(self.lag, dtype=np.float64)
        return {"p50": float(np.quantile(a, 0.5)), "p99": float(np.quantile(a, 0.99)), "max": float(a.max())}


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_esc(str(v))}"' for k, v in labels.items()) + "}"


def _num(x: float) -> str:
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x)) if not float(x).is_integer() or abs(x) >= 1e15 else str(int(x))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(self, name: str, kind: str, help_: str, samples: list[tuple[dict[str, str], float]]) -> None:
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(**labels)} {_num(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(state: ApiState) -> str:
    g = state.guard
    snap = state.source.snapshot()
    mon = state.monitor
    mon.count()
    w = _Writer()
    level = snap.columns["level"]
    w.metric(
        "capguard_accounts",
        "gauge",
        "Accounts per ladder level.",
        [({"level": name}, float(np.sum(level == n))) for n, name in enumerate(LEVEL_NAMES)],
    )
    ratio = snap.columns["margin_ratio"]
    finite = ratio[np.isfinite(ratio)]
    w.metric(
        "capguard_margin_ratio",
        "summary",
        "Margin ratio (equity / maintenance margin) across accounts with a finite ratio.",
        [({"quantile": repr(q)}, float(np.quantile(finite, q)) if finite.size else float("nan")) for q in QUANTILES],
    )
    w.lines.append(f"capguard_margin_ratio_count {finite.size}")
    w.lines.append(f"capguard_margin_ratio_sum {_num(float(finite.sum()) if finite.size else 0.0)}")
    data = snap.columns["data_state"]
    w.metric(
        "capguard_accounts_data_state",
        "gauge",
        "Accounts per data state.",
        [({"state": s.name}, float(np.sum(data == s))) for s in DataState],
    )
    w.metric(
        "capguard_equity_total",
        "gauge",
        "Total equity (quote currency).",
        [({}, float(np.nansum(snap.columns["equity"])))],
    )
    w.metric(
        "capguard_maintenance_margin_total",
        "gauge",
        "Total maintenance margin (quote currency).",
        [({}, float(np.nansum(snap.columns["maintenance_margin"])))],
    )
    book = g.book
    now = g.clock.now()
    with np.errstate(invalid="ignore"):
        age = now - book.mark_time
    w.metric(
        "capguard_feed_age_seconds",
        "gauge",
        "Seconds since the last accepted mark price, per instrument (engine clock).",
        [({"instrument": inst.symbol}, float(age[i])) for i, inst in enumerate(book.instruments)],
    )
    w.metric("capguard_feed_paused", "gauge", "1 while the simulated feed is paused.", [({}, float(g.feed.paused))])
    p = g.protection
    w.metric("capguard_kill_switch", "gauge", "1 while the kill switch is engaged.", [({}, float(p.kill_switch))])
    w.metric(
        "capguard_circuit_breaker", "gauge", "1 while the circuit breaker is tripped.", [({}, float(p.breaker_tripped))]
    )
    w.metric("capguard_actions_active", "gauge", "Protective actions in flight.", [({}, float(len(p.active)))])
    w.metric("capguard_schedule_pending", "gauge", "Scheduled actions not yet due.", [({}, float(len(p.schedule)))])
    w.metric(
        "capguard_actions_total",
        "counter",
        "Action events since the API started, by stage and kind.",
        [({"stage": s, "kind": k}, float(n)) for (s, k), n in sorted(mon.actions.items())],
    )
    w.metric(
        "capguard_alerts_total",
        "counter",
        "Alerts since the API started, by severity and category.",
        [({"severity": s, "category": c}, float(n)) for (s, c), n in sorted(mon.alerts.items())],
    )
    w.metric(
        "capguard_transitions_total",
        "counter",
        "Ladder transitions since the API started, by level entered.",
        [({"to_level": lv}, float(n)) for lv, n in sorted(mon.transitions.items())],
    )
    lag = mon.lag_quantiles()
    w.metric(
        "capguard_loop_latency_seconds",
        "gauge",
        "Event loop latency over the last minute (how late a 50 ms sleep wakes).",
        [({"quantile": "0.5"}, lag["p50"]), ({"quantile": "0.99"}, lag["p99"]), ({"quantile": "1"}, lag["max"])],
    )
    w.metric("capguard_engine_version", "gauge", "Engine evaluation counter.", [({}, float(g.version))])
    w.metric(
        "capguard_ws_clients",
        "gauge",
        "Connected WebSocket clients per channel.",
        [({"channel": n}, float(ch.client_count)) for n, ch in state.channels.items()],
    )
    w.metric(
        "capguard_ws_messages_total",
        "counter",
        "Messages published per channel (each serialised once for all clients).",
        [({"channel": n}, float(ch.messages)) for n, ch in state.channels.items()],
    )
    w.metric(
        "capguard_ws_coalesced_total",
        "counter",
        "Times a slow client's queue was dropped for a fresh snapshot.",
        [({"channel": n}, float(ch.coalesced_total())) for n, ch in state.channels.items()],
    )
    w.metric(
        "capguard_api_requests_total",
        "counter",
        "HTTP requests served, by method and status class.",
        [({"method": m, "status": s}, float(n)) for (m, s), n in sorted(state.requests.items())],
    )
    return w.text()
