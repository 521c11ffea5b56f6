"""Console benchmark: `python -m capguard_tui.bench`.

Runs the real console headless (App.run_test) over a synthetic book of 10k and 100k accounts
whose numbers change at every refresh (4 Hz), and reports:

- CPU per second of wall time while the overview refreshes (time.process_time deltas),
- key press to the next frame (ms, median of cursor moves),
- time to the first frame with the table drawn (ms).

Frames are rendered to terminal bytes exactly as a real driver would (only the write is
skipped). The synthetic source implements the snapshot side of GuardView; it is for this
benchmark only. The last line is JSON.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

import numpy as np
from textual import events

from capguard_tui.app import CapguardApp
from engine.operators import Operator, Role
from engine.view import AccountsSnapshot, CommandResult

SIZE = (160, 48)
MEASURE_SECONDS = 6.0
KEY_PRESSES = 20
DESKS = ("delta-one", "basis", "macro", "retail-mm", "options", "arb")
STRATEGIES = ("trend", "momentum", "carry", "quoting", "inventory", "event", "relative-value")


class _NoEvents:
    def drain(self) -> list[dict[str, Any]]:
        return []

    def close(self) -> None:
        pass


class SyntheticBook:
    """`n` accounts whose equity and margin drift a little at every snapshot (numpy only)."""

    def __init__(self, n: int, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.n = n
        self.ids = tuple(f"acct-{i:06d}" for i in range(n))
        self.desks = tuple(DESKS[i % len(DESKS)] for i in range(n))
        self.strategies = tuple(STRATEGIES[(i * 7) % len(STRATEGIES)] for i in range(n))
        self.equity = rng.lognormal(12, 1.2, n)
        self.mm = self.equity / rng.uniform(1.1, 12.0, n)
        self.im = self.mm * 2.0
        self.notional = self.mm * rng.uniform(40, 120, n)
        self.thresholds = np.array([2.0, 1.5, 1.2])
        self.version = 0
        self.t0 = time.time()

    def snapshot(self) -> AccountsSnapshot:
        self.version += 1
        now = time.time()
        self.equity *= 1.0 + self.rng.normal(0, 0.002, self.n)
        ratio = self.equity / self.mm
        w, c, liq = self.thresholds
        level = (ratio <= w).astype(np.int8) + (ratio <= c) + (ratio <= liq)
        columns = {
            "equity": self.equity.copy(),
            "maintenance_margin": self.mm.copy(),
            "margin_ratio": ratio,
            "level": level,
            "ratio_level": level.copy(),
            "utilization": self.im / self.equity,
            "leverage": self.notional / self.equity,
            "worst_liq_distance_pct": np.clip((ratio - 1.0) * 8.0, 0, None),
            "data_state": np.zeros(self.n, dtype=np.int8),
            "trading_state": (level >= 2).astype(np.int8),
            "held_until": np.full(self.n, np.nan),
            "updated_at": np.full(self.n, now - 0.2),
            "warning": np.full(self.n, w),
            "critical": np.full(self.n, c),
            "liquidation": np.full(self.n, liq),
        }
        counts = np.bincount(level, minlength=4)
        summary = {
            "time": "",
            "version": self.version,
            "accounts": self.n,
            "levels": {
                name: int(k) for name, k in zip(("SAFE", "WARNING", "CRITICAL", "LIQUIDATION"), counts, strict=True)
            },
            "total_equity": float(self.equity.sum()),
            "total_maintenance_margin": float(self.mm.sum()),
            "circuit_breaker": False,
            "kill_switch": False,
            "protection_mode": "active",
            "scenario": "synthetic",
            "feed_paused": False,
        }
        return AccountsSnapshot(self.version, now, self.ids, self.ids, self.desks, self.strategies, columns, summary)

    def status(self) -> dict[str, Any]:
        return {"time": ""}

    def subscribe(self, maxsize: int = 1000, kinds: set[str] | None = None) -> _NoEvents:
        return _NoEvents()

    def recent_actions(self, limit: int = 100) -> list[dict[str, Any]]:
        return []

    def account_detail(self, account_id: str) -> dict[str, Any]:
        raise KeyError(account_id)

    async def command(self, name: str, operator: Operator, **params: Any) -> CommandResult:
        return CommandResult(False, "synthetic book: no commands")


async def measure(n: int) -> dict[str, float]:
    started = time.perf_counter()
    book = SyntheticBook(n)
    app = CapguardApp(book, Operator("bench", Role.RISK), refresh_hz=4.0)
    frames: list[float] = []
    display = app._display

    def record(screen: Any, renderable: Any) -> None:
        if renderable is not None and hasattr(renderable, "render_segments"):
            renderable.render_segments(app.console)  # the bytes a real terminal would get
            frames.append(time.perf_counter())
        display(screen, renderable)

    app._display = record  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        while not frames or app.refreshes == 0:
            await asyncio.sleep(0.002)
        first_frame = frames[0] - started
        await pilot.pause(1.0)  # settle
        wall0, cpu0, refreshes0 = time.perf_counter(), time.process_time(), app.refreshes
        await asyncio.sleep(MEASURE_SECONDS)
        cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
        rate = (app.refreshes - refreshes0) / (time.perf_counter() - wall0)
        latencies = []
        for k in range(KEY_PRESSES):
            await asyncio.sleep(0.05 + 0.013 * k)  # land at different points of the refresh cycle
            seen = len(frames)
            pressed = time.perf_counter()
            app._driver.send_message(events.Key("down", None))  # type: ignore[union-attr]
            while len(frames) == seen or frames[-1] < pressed:
                await asyncio.sleep(0.0005)
            latencies.append(frames[-1] - pressed)
    return {
        "cpu_pct": cpu * 100.0,
        "refresh_hz": rate,
        "key_to_frame_ms": statistics.median(latencies) * 1000.0,
        "key_to_frame_p95_ms": sorted(latencies)[int(0.95 * (len(latencies) - 1))] * 1000.0,
        "first_frame_ms": first_frame * 1000.0,
    }


async def main() -> dict[str, float]:
    results = {}
    for n in (10_000, 100_000):
        r = await measure(n)
        results[n] = r
        print(
            f"{n:>7,} accounts: CPU {r['cpu_pct']:5.1f}% of one core at {r['refresh_hz']:.1f} refreshes/s, "
            f"key to frame {r['key_to_frame_ms']:.1f} ms (p95 {r['key_to_frame_p95_ms']:.1f}), "
            f"first frame {r['first_frame_ms']:.0f} ms",
            flush=True,
        )
    return {
        "cpu_pct_10k": round(results[10_000]["cpu_pct"], 1),
        "cpu_pct_100k": round(results[100_000]["cpu_pct"], 1),
        "key_to_frame_ms": round(max(r["key_to_frame_ms"] for r in results.values()), 1),
        "first_frame_ms": round(max(r["first_frame_ms"] for r in results.values()), 0),
    }


if __name__ == "__main__":
    print(f"capguard console benchmark: {SIZE[0]}x{SIZE[1]}, overview refreshing at 4 Hz", flush=True)
    print(json.dumps(asyncio.run(main())))
