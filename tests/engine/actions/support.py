"""Shared builders for the action tests: instruments, one-account books, an in-memory journal,
and a sleep that advances a simulated clock instead of waiting."""

from __future__ import annotations

import json
import os
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from engine.book import Book
from engine.clock import SimClock
from engine.model import Account, Bracket, Instrument, Position

# Binance BTCUSDT / ETHUSDT tables as in config.toml (first tiers), and simplified alt tables.
BTC_BRACKETS = [
    Bracket(floor=0, cap=50_000, mmr=0.004, max_leverage=125, maintenance_amount=0),
    Bracket(floor=50_000, cap=250_000, mmr=0.005, max_leverage=100, maintenance_amount=50),
    Bracket(floor=250_000, cap=3_000_000, mmr=0.01, max_leverage=50, maintenance_amount=1_300),
    Bracket(floor=3_000_000, cap=15_000_000, mmr=0.025, max_leverage=20, maintenance_amount=46_300),
    Bracket(floor=15_000_000, mmr=0.05, max_leverage=10, maintenance_amount=421_300),
]
ETH_BRACKETS = [
    Bracket(floor=0, cap=50_000, mmr=0.005, max_leverage=100, maintenance_amount=0),
    Bracket(floor=50_000, cap=250_000, mmr=0.0065, max_leverage=75, maintenance_amount=75),
    Bracket(floor=250_000, cap=1_000_000, mmr=0.01, max_leverage=50, maintenance_amount=950),
    Bracket(floor=1_000_000, mmr=0.02, max_leverage=25, maintenance_amount=10_950),
]
ALT_BRACKETS = [
    Bracket(floor=0, mmr=0.01, max_leverage=50),
    Bracket(floor=25_000, mmr=0.025, max_leverage=25),
    Bracket(floor=100_000, mmr=0.05, max_leverage=20),
    Bracket(floor=250_000, mmr=0.1, max_leverage=10),
]


def instruments() -> list[Instrument]:
    return [
        Instrument(
            symbol="BTCUSDT",
            underlying="BTC",
            group="majors",
            lot_size=0.001,
            min_notional=100.0,
            book_depth=60_000_000.0,
            brackets=BTC_BRACKETS,
        ),
        Instrument(
            symbol="ETHUSDT",
            underlying="ETH",
            group="majors",
            lot_size=0.001,
            min_notional=20.0,
            book_depth=30_000_000.0,
            brackets=ETH_BRACKETS,
        ),
        Instrument(
            symbol="SOLUSDT",
            underlying="SOL",
            group="l1",
            lot_size=1.0,
            min_notional=5.0,
            book_depth=6_000_000.0,
            brackets=ALT_BRACKETS,
        ),
        # No book_depth: depth = avg_daily_volume / 250 = 1,000,000.
        Instrument(
            symbol="THINUSDT",
            underlying="THIN",
            group="thin",
            lot_size=1.0,
            min_notional=5.0,
            avg_daily_volume=250_000_000.0,
            brackets=ALT_BRACKETS,
        ),
    ]


MARKS = {"BTCUSDT": 50_000.0, "ETHUSDT": 2_000.0, "SOLUSDT": 100.0, "THINUSDT": 10.0}


def position(symbol: str, qty: float, entry: float | None = None, last: bool = False, day: int = 1) -> Position:
    return Position(
        symbol=symbol,
        qty=qty,
        entry_price=entry or MARKS[symbol],
        liquidate_last=last,
        opened=datetime(2025, 1, day, tzinfo=UTC),
    )


def make_book(positions: list[Position], wallet: float, marks: dict[str, float] | None = None, **acct: Any) -> Book:
    """A book with one account "acct-1" holding `positions`, valued at `marks` (MARKS by default)."""
    book = Book(instruments(), [Account(id="acct-1", wallet_balance=wallet, positions=positions, **acct)])
    book.set_prices(marks or MARKS, received=0.0)
    book.revalue()
    return book


def four_positions() -> Book:
    return make_book(
        [
            position("BTCUSDT", 6.0),
            position("ETHUSDT", 100.0),
            position("SOLUSDT", -2_000.0),
            position("THINUSDT", 5_000.0),
        ],
        wallet=30_000.0,
    )


def qty_of(book: Book, symbol: str, account: int = 0) -> float:
    i = book.symbol_index[symbol]
    k = int(book.find_positions(np.array([account]), np.array([i]))[0])
    return float(book.pos_qty[k]) if k >= 0 else 0.0


class MemoryJournal:
    """The journal's `append` signature, kept in a list; `unfinished_actions` as the real one."""

    def __init__(self, fail_on: tuple[str, int] | None = None) -> None:
        self.records: list[dict[str, Any]] = []
        self._fail_on = fail_on  # (kind, nth): raise on the nth append of that kind

    def append(self, kind: str, account: str | None = None, action_id: str | None = None, **fields: Any) -> int:
        if self._fail_on is not None and kind == self._fail_on[0]:
            seen = sum(1 for r in self.records if r["kind"] == kind)
            if seen + 1 == self._fail_on[1]:
                raise ProcessDied(f"died while journaling {kind} #{seen + 1}")
        seq = len(self.records) + 1
        self.records.append({"seq": seq, "kind": kind, "account": account, "action_id": action_id, **fields})
        return seq

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["kind"] == kind]

    def unfinished_actions(self) -> list[dict[str, Any]]:
        ended = {r["action_id"] for r in self.records if r["kind"] == "action_end"}
        out = []
        for start in self.kinds("action_start"):
            if start["action_id"] in ended:
                continue
            action = dict(start)
            orders = []
            for intent in self.kinds("order_intent"):
                if intent["action_id"] != start["action_id"]:
                    continue
                cid = intent["client_order_id"]
                results = [r for r in self.kinds("order") if r.get("client_order_id") == cid]
                fills = [r for r in self.kinds("fill") if r.get("client_order_id") == cid]
                orders.append(
                    {
                        "client_order_id": cid,
                        "intent": intent,
                        "result": results[-1] if results else None,
                        "fills": fills,
                    }
                )
            action["orders"] = orders
            out.append(action)
        return out


class JsonlJournal(MemoryJournal):
    """The same, written through to a JSON-lines file (flushed and fsynced per record) so a test
    can kill the process and read back what it had journaled. `kill_on=(kind, nth)` SIGKILLs the
    process on the nth append of that kind, before it is written."""

    def __init__(self, path: Path, kill_on: tuple[str, int] | None = None) -> None:
        super().__init__()
        self.path = path
        self._kill_on = kill_on
        if path.exists():
            self.records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def append(self, kind: str, account: str | None = None, action_id: str | None = None, **fields: Any) -> int:
        kill = self._kill_on
        if kill is not None and kind == kill[0] and sum(1 for r in self.records if r["kind"] == kind) + 1 == kill[1]:
            os.kill(os.getpid(), signal.SIGKILL)
        seq = super().append(kind, account, action_id, **fields)
        with self.path.open("a") as f:
            f.write(json.dumps(self.records[-1]) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return seq


class ProcessDied(Exception):
    """Stands for the process dying at that point (nothing after it runs)."""


class ClockSleep:
    """An injected sleep: records each wait and advances the simulated clock by it."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)


def paused_clock() -> SimClock:
    return SimClock(start=1_700_000_000.0, paused=True)
