"""The simulated venue: a real implementation of the Broker interface (engine/orders.py).

It reads marks and positions from the Book and never changes the Book: the caller books each
fill with `book.apply_fill` (the one path that changes positions). Like a venue it:

- accepts only orders that reduce a position: an order that would open, grow or flip one is
  rejected with the reason;
- fills market orders at the mark moved against the order by the square-root impact of its
  size: average slippage fraction 0.01 * k * sqrt(notional / depth) (ImpactModel);
- fills IOC and limit orders only within their limit price: when the impact of the whole
  quantity would cross the limit, the largest quantity (in lots) whose average price stays
  within it fills and the rest is cancelled (the simulator rests no limit order);
- holds stop orders until `check_stops()` finds the mark through the stop, then fills them as
  market orders;
- charges the taker fee on the traded notional;
- remembers every order by client order id: a resend of an id it has already seen returns the
  original answer and fills nothing (idempotency). With `state_path` that memory is a small
  SQLite file, so a restarted process sees the venue's orders and fills
  (`lookup`, `fills_since_start`, `replay_into`).

With `impact_half_life > 0` the venue remembers its own recent flow per symbol and side:
the book has not refilled yet, so the cost of an order is that of the cumulative flow
(`(R + n)^1.5 - R^1.5` instead of `n^1.5`), the remembered flow R decaying with that half
life on the clock. Slicing an order over time then pays off only as the book refills.

Fault hooks for tests: `reject_next`, `timeout_next` (executed, answer lost), `drop_next`
(never arrives), `block_after` (every later send times out without arriving), and `on_send`
(called with each request before anything else happens; may raise, e.g. to kill the process).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.actions.impact import ImpactModel
from engine.book import Book
from engine.clock import Clock
from engine.orders import BrokerTimeout, OrderRequest, OrderResult, OrderStatus, OrderType

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    client_order_id TEXT UNIQUE NOT NULL,
    venue_order_id  TEXT NOT NULL,
    account         TEXT NOT NULL,
    symbol          TEXT NOT NULL,
    side            INTEGER NOT NULL,
    qty             REAL NOT NULL,
    order_type      TEXT NOT NULL,
    price           REAL,
    reduce_only     INTEGER NOT NULL,
    status          TEXT NOT NULL,
    filled_qty      REAL NOT NULL,
    avg_price       REAL,
    fee             REAL NOT NULL,
    reason          TEXT NOT NULL,
    fills           TEXT NOT NULL,
    time            REAL NOT NULL,
    arrivals        INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS fills (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    client_order_id TEXT NOT NULL,
    account         TEXT NOT NULL,
    symbol          TEXT NOT NULL,
    qty             REAL NOT NULL,
    price           REAL NOT NULL,
    fee             REAL NOT NULL,
    time            REAL NOT NULL
);
"""

_ORDER_COLUMNS = (
    "client_order_id, venue_order_id, account, symbol, side, qty, order_type, price, reduce_only,"
    " status, filled_qty, avg_price, fee, reason, fills, time"
)


@dataclass(frozen=True)
class SimBrokerParams:
    latency: float = 0.0  # seconds awaited on every call
    impact: ImpactModel = field(default_factory=ImpactModel)  # slippage model and taker fee
    impact_half_life: float = 0.0  # seconds; 0: every order meets a fully refilled book

    def __post_init__(self) -> None:
        for name in ("latency", "impact_half_life"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")


@dataclass(frozen=True)
class VenueFill:
    """One execution as the venue recorded it. `qty` is signed contracts traded (negative sells)."""

    seq: int
    client_order_id: str
    account: str
    symbol: str
    qty: float
    price: float
    fee: float
    time: float


def _copy(result: OrderResult) -> OrderResult:
    return dataclasses.replace(result, fills=list(result.fills))


class SimBroker:
    def __init__(
        self, book: Book, clock: Clock, params: SimBrokerParams | None = None, state_path: Path | None = None
    ) -> None:
        self.book = book
        self.clock = clock
        self.params = params or SimBrokerParams()
        self.state_path = state_path
        self.on_send: Callable[[OrderRequest], Any] | None = None
        self._rejects: list[str] = []
        self._timeouts = 0
        self._drops = 0
        self._block_after: int | None = None
        self._flow: dict[tuple[str, int], tuple[float, float]] = {}  # (symbol, side) -> (notional, time)
        if state_path is not None:
            Path(state_path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(":memory:" if state_path is None else str(state_path), isolation_level=None)
        self._db.executescript(_SCHEMA)

    # ------------------------------------------------------------------ fault hooks
    def reject_next(self, n: int = 1, reason: str = "rejected by the simulated venue") -> None:
        """The next n orders that arrive are rejected with `reason` (recorded under their ids)."""
        self._rejects.extend([reason] * n)

    def timeout_next(self, n: int = 1) -> None:
        """The next n sends execute at the venue but their answers are lost (BrokerTimeout)."""
        self._timeouts += n

    def drop_next(self, n: int = 1) -> None:
        """The next n sends never arrive (BrokerTimeout; lookup returns None)."""
        self._drops += n

    def block_after(self, n: int) -> None:
        """Let the next n sends through; every later one times out without arriving."""
        self._block_after = n

    def unblock(self) -> None:
        self._block_after = None

    # ------------------------------------------------------------------ Broker
    async def send(self, order: OrderRequest) -> OrderResult:
        await asyncio.sleep(self.params.latency)
        if self.on_send is not None:
            self.on_send(order)
        if self._drops > 0:
            self._drops -= 1
            raise BrokerTimeout(f"order {order.client_order_id}: no answer (lost before the venue)")
        if self._block_after is not None:
            if self._block_after <= 0:
                raise BrokerTimeout(f"order {order.client_order_id}: no answer (venue unreachable)")
            self._block_after -= 1
        known = self._load(order.client_order_id)
        if known is not None:
            self._db.execute(
                "UPDATE orders SET arrivals = arrivals + 1 WHERE client_order_id = ?", (order.client_order_id,)
            )
            result = known
        else:
            if self._rejects:
                reason = self._rejects.pop(0)
                result = OrderResult(order.client_order_id, OrderStatus.REJECTED, reason=reason)
            else:
                result = self._execute(order)
            self._store(order, result)
        if self._timeouts > 0:
            self._timeouts -= 1
            raise BrokerTimeout(f"order {order.client_order_id}: no answer (lost after the venue)")
        return _copy(result)

    async def lookup(self, client_order_id: str) -> OrderResult | None:
        await asyncio.sleep(self.params.latency)
        found = self._load(client_order_id)
        return None if found is None else _copy(found)

    async def cancel_orders(self, account: str, exposure_increasing_only: bool = True) -> list[str]:
        """Cancel the account's open orders held in the Book (by default only the exposure-increasing
        ones). Ids are `f"{account}:{k}"`, k the row in the Book's open-order arrays at the call; the
        caller removes them with `book.remove_orders(book.exposure_increasing_orders(a))`."""
        await asyncio.sleep(self.params.latency)
        a = self.book.account_index.get(account)
        if a is None:
            return []
        mask = self.book.exposure_increasing_orders(a) if exposure_increasing_only else self.book.ord_account == a
        return [f"{account}:{k}" for k in np.flatnonzero(mask).tolist()]

    # ------------------------------------------------------------------ venue memory
    def arrivals(self, client_order_id: str) -> int:
        """How many times an order with this id reached the venue (0: never)."""
        row = self._db.execute("SELECT arrivals FROM orders WHERE client_order_id = ?", (client_order_id,)).fetchone()
        return 0 if row is None else int(row[0])

    def orders(self) -> list[dict[str, Any]]:
        """Every order the venue has seen, oldest first."""
        rows = self._db.execute(f"SELECT {_ORDER_COLUMNS}, arrivals FROM orders ORDER BY seq").fetchall()
        names = [*(c.strip() for c in _ORDER_COLUMNS.split(",")), "arrivals"]
        out = []
        for row in rows:
            d = dict(zip(names, row, strict=True))
            d["fills"] = json.loads(d["fills"])
            out.append(d)
        return out

    def fills_since_start(self) -> list[VenueFill]:
        """Every fill the venue has recorded (since its state file was created), oldest first."""
        rows = self._db.execute(
            "SELECT seq, client_order_id, account, symbol, qty, price, fee, time FROM fills ORDER BY seq"
        ).fetchall()
        return [VenueFill(*row) for row in rows]

    def replay_into(self, book: Book, only: Iterable[str] | None = None) -> int:
        """Book the venue's fills (all, or those of the client order ids in `only`) into `book`,
        which must hold the positions as they were before them. Returns the fills booked."""
        keep = None if only is None else set(only)
        n = 0
        for f in self.fills_since_start():
            if keep is not None and f.client_order_id not in keep:
                continue
            a, i = book.account_index[f.account], book.symbol_index[f.symbol]
            pos = int(book.find_positions(np.array([a]), np.array([i]))[0])
            book.apply_fill(pos, f.qty, f.price, f.fee)
            n += 1
        return n

    def check_stops(self) -> list[OrderResult]:
        """Fill the resting stop orders whose stop the mark has crossed; returns their new results
        (the caller books the fills)."""
        rows = self._db.execute(
            f"SELECT {_ORDER_COLUMNS} FROM orders WHERE status = ? AND order_type = ? ORDER BY seq",
            (OrderStatus.OPEN.value, OrderType.STOP.value),
        ).fetchall()
        out = []
        for row in rows:
            cid, _, account, symbol, side, qty, _, price, reduce_only = row[:9]
            request = OrderRequest(cid, account, symbol, int(side), qty, OrderType.STOP, price, bool(reduce_only))
            result = self._execute(request)
            if result.status != OrderStatus.OPEN:
                self._update(request, result)
                out.append(_copy(result))
        return out

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ execution
    def _reject(self, order: OrderRequest, reason: str) -> OrderResult:
        return OrderResult(order.client_order_id, OrderStatus.REJECTED, reason=reason)

    def _execute(self, order: OrderRequest) -> OrderResult:
        book = self.book
        a = book.account_index.get(order.account)
        if a is None:
            return self._reject(order, f"unknown account {order.account!r}")
        i = book.symbol_index.get(order.symbol)
        if i is None:
            return self._reject(order, f"unknown symbol {order.symbol!r}")
        mark = float(book.mark[i])
        if not (math.isfinite(mark) and mark > 0):
            return self._reject(order, f"no mark price for {order.symbol}")
        pos = int(book.find_positions(np.array([a]), np.array([i]))[0])
        held = float(book.pos_qty[pos]) if pos >= 0 else 0.0
        what = f"{'buy' if order.side > 0 else 'sell'} {order.qty:g} {order.symbol}"
        if held == 0:
            return self._reject(order, f"{what}: no position to reduce; it would open one (reduce-only)")
        if np.sign(held) == order.side:
            return self._reject(order, f"{what} would increase the position of {held:g} (reduce-only)")
        if order.qty > abs(held) * (1 + 1e-9):
            return self._reject(order, f"{what} exceeds the position of {held:g}; it would flip it (reduce-only)")
        if order.order_type != OrderType.MARKET and not (order.price is not None and order.price > 0):
            return self._reject(order, f"{what}: a {order.order_type.value} order needs a positive price")
        qty = min(order.qty, abs(held))
        if order.order_type == OrderType.STOP:
            assert order.price is not None
            crossed = mark <= order.price if order.side < 0 else mark >= order.price
            if not crossed:
                return OrderResult(
                    order.client_order_id,
                    OrderStatus.OPEN,
                    reason=f"stop at {order.price:g} rests until the mark ({mark:g}) crosses it",
                )
            return self._fill(order, i, mark, qty, None)
        limit = order.price if order.order_type in (OrderType.LIMIT, OrderType.IOC) else None
        return self._fill(order, i, mark, qty, limit)

    def _flow_now(self, symbol: str, side: int) -> float:
        hl = self.params.impact_half_life
        if hl <= 0:
            return 0.0
        notional, t = self._flow.get((symbol, side), (0.0, 0.0))
        return notional * 0.5 ** (max(0.0, self.clock.now() - t) / hl)

    def _avg_slippage(self, notional: float, flow: float, depth: float) -> float:
        """Average slippage fraction of `notional` traded on top of a remembered `flow`."""
        c = 0.01 * self.params.impact.k
        if notional <= 0:
            return 0.0
        if flow <= 0:
            return c * math.sqrt(notional / depth)
        return c / math.sqrt(depth) * ((flow + notional) ** 1.5 - flow**1.5) / notional

    def _fill(self, order: OrderRequest, i: int, mark: float, qty: float, limit: float | None) -> OrderResult:
        inst = self.book.instruments[i]
        depth = self.params.impact.depth(inst)
        unit = inst.contract_size * mark
        side = order.side
        flow = self._flow_now(order.symbol, side)
        if limit is not None:
            room = side * (limit - mark) / mark  # the largest average slippage the limit allows
            if room < 0:
                return OrderResult(
                    order.client_order_id,
                    OrderStatus.CANCELLED,
                    reason=f"limit {limit:g} not marketable at mark {mark:g}: nothing filled",
                )
            if self._avg_slippage(qty * unit, flow, depth) > room:
                lo, hi = 0.0, qty
                for _ in range(60):
                    mid = 0.5 * (lo + hi)
                    if self._avg_slippage(mid * unit, flow, depth) <= room:
                        lo = mid
                    else:
                        hi = mid
                lot = inst.lot_size
                qty = math.floor(lo / lot + 1e-9) * lot if lot > 0 else lo
            if qty <= 0:
                return OrderResult(
                    order.client_order_id,
                    OrderStatus.CANCELLED,
                    reason=f"limit {limit:g}: the impact of even one lot crosses it; nothing filled",
                )
        slip = self._avg_slippage(qty * unit, flow, depth)
        price = mark * (1 + side * slip)
        if limit is not None:
            price = min(price, limit) if side > 0 else max(price, limit)
        fee = qty * inst.contract_size * price * self.params.impact.taker_fee
        if self.params.impact_half_life > 0:
            self._flow[(order.symbol, side)] = (flow + qty * unit, self.clock.now())
        complete = qty >= order.qty * (1 - 1e-9)
        reason = "" if complete else f"limit {limit:g}: {qty:g} of {order.qty:g} filled, the rest cancelled"
        return OrderResult(
            order.client_order_id,
            OrderStatus.FILLED if complete else OrderStatus.PARTIAL,
            filled_qty=qty,
            avg_price=price,
            fee=fee,
            reason=reason,
            fills=[(qty, price)],
        )

    # ------------------------------------------------------------------ storage
    def _store(self, order: OrderRequest, result: OrderResult) -> None:
        now = self.clock.now()
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            cur = db.execute(
                f"INSERT INTO orders ({_ORDER_COLUMNS}) VALUES (?, '', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    order.client_order_id,
                    order.account,
                    order.symbol,
                    order.side,
                    order.qty,
                    order.order_type.value,
                    order.price,
                    int(order.reduce_only),
                    result.status.value,
                    result.filled_qty,
                    result.avg_price,
                    result.fee,
                    result.reason,
                    json.dumps(result.fills),
                    now,
                ),
            )
            result.venue_order_id = f"SIM-{cur.lastrowid}"
            db.execute("UPDATE orders SET venue_order_id = ? WHERE seq = ?", (result.venue_order_id, cur.lastrowid))
            self._insert_fills(order, result, now)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _update(self, order: OrderRequest, result: OrderResult) -> None:
        now = self.clock.now()
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT venue_order_id FROM orders WHERE client_order_id = ?", (order.client_order_id,)
            ).fetchone()
            result.venue_order_id = row[0]
            db.execute(
                "UPDATE orders SET status = ?, filled_qty = ?, avg_price = ?, fee = ?, reason = ?, fills = ?"
                " WHERE client_order_id = ?",
                (
                    result.status.value,
                    result.filled_qty,
                    result.avg_price,
                    result.fee,
                    result.reason,
                    json.dumps(result.fills),
                    order.client_order_id,
                ),
            )
            self._insert_fills(order, result, now)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _insert_fills(self, order: OrderRequest, result: OrderResult, now: float) -> None:
        total = sum(q * p for q, p in result.fills)
        for q, p in result.fills:
            fee = result.fee * (q * p / total) if total > 0 else 0.0
            self._db.execute(
                "INSERT INTO fills (client_order_id, account, symbol, qty, price, fee, time)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (order.client_order_id, order.account, order.symbol, order.side * q, p, fee, now),
            )

    def _load(self, client_order_id: str) -> OrderResult | None:
        row = self._db.execute(
            "SELECT client_order_id, status, filled_qty, avg_price, fee, reason, venue_order_id, fills"
            " FROM orders WHERE client_order_id = ?",
            (client_order_id,),
        ).fetchone()
        if row is None:
            return None
        cid, status, filled, avg, fee, reason, vid, fills = row
        return OrderResult(
            cid,
            OrderStatus(status),
            filled_qty=filled,
            avg_price=avg,
            fee=fee,
            reason=reason,
            venue_order_id=vid,
            fills=[(float(q), float(p)) for q, p in json.loads(fills)],
        )
