"""Plans: what a protective action would send, priced and projected, before anything is sent.

A plan is data (a dry run IS the plan). The executor turns each `PlannedOrder` into one or
more reduce-only orders with client ids derived from `plan.action_id` and the order's `n`
(`f"{action_id}-{n}"`), so a plan can be re-executed after a restart without doubling an order.

`AccountView` holds one account's positions as small arrays and projects the account after a
vector of reductions: equity after estimated slippage and fees, maintenance margin walked
through the bracket table, and the margin ratio (per position in an isolated-mode account,
the lowest one counting, as in the Book).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

import numpy as np

from engine import margin
from engine.actions.impact import ImpactModel
from engine.book import Book
from engine.model import InputError

Priority = Literal["risk", "size", "market", "time"]

# A ratio within this relative distance of the target counts as reaching it (float noise).
TARGET_RTOL = 1e-9


def _json_num(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def new_action_id(prefix: str) -> str:
    """A fresh action id: short, and only characters every venue accepts in a client order id."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def pct(rate: float) -> str:
    """0.01 -> '1.0%', 0.005 -> '0.5%', 0.0065 -> '0.65%'."""
    s = f"{rate * 100:.4f}".rstrip("0")
    return s + "0%" if s.endswith(".") else s + "%"


@dataclass
class PlannedOrder:
    """One reduce-only order of a plan. `side` is +1 buy / -1 sell; `qty` positive contracts."""

    n: int
    symbol: str
    position: int  # index in the Book's position arrays when planned
    side: int
    qty: float
    mark: float  # mark price when planned
    notional: float  # qty * contract size * mark
    est_price: float
    est_slippage: float  # quote currency
    est_fee: float  # quote currency
    slice: int = 0
    delay_s: float = 0.0  # wait this long before sending (first order of a slice)
    order_type: str = "market"  # engine.orders.OrderType value
    limit_price: float | None = None  # at planning marks
    limit_offset: float | None = None  # limit = mark * (1 + side * offset), repriced when sent
    stop_price: float | None = None
    reduce_only: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_num(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PlannedOrder:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class Plan:
    action_id: str
    account: int  # index in the Book
    account_id: str
    kind: str  # "deleverage" | "liquidate"
    strategy: str  # deleverage strategy, or the liquidation priority
    method: str  # deleverage method, or the liquidation mode
    orders: list[PlannedOrder]
    equity: float  # now
    maintenance_margin: float  # now
    ratio: float  # now
    projected_equity: float
    projected_maintenance_margin: float
    projected_ratio: float
    target: float | None = None
    fraction: float | None = None
    recheck: bool = False  # the executor stops between slices once the account has recovered
    deadline_s: float | None = None  # orderly liquidation: after this, the rest goes immediately
    notes: list[str] = field(default_factory=list)

    @property
    def reduced_notional(self) -> float:
        return float(sum(o.notional for o in self.orders))

    @property
    def est_cost(self) -> float:
        return float(sum(o.est_slippage + o.est_fee for o in self.orders))

    @property
    def slices(self) -> int:
        return 1 + max((o.slice for o in self.orders), default=0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: infinities and NaN become null (a ratio of null with no margin left is +inf)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "orders":
                out["orders"] = [o.to_dict() for o in v]
            elif f.name == "notes":
                out["notes"] = list(v)
            else:
                out[f.name] = _json_num(v)
        out["reduced_notional"] = self.reduced_notional
        out["est_cost"] = self.est_cost
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["orders"] = [PlannedOrder.from_dict(o) for o in d.get("orders", [])]
        kw["notes"] = list(d.get("notes", []))
        for name in ("ratio", "projected_ratio"):
            if kw.get(name) is None:
                kw[name] = math.inf
        for name in ("equity", "maintenance_margin", "projected_equity", "projected_maintenance_margin"):
            if kw.get(name) is None:
                kw[name] = math.nan
        return cls(**kw)


def round_up(x: float, lot: float) -> float:
    """x rounded up to a multiple of lot (a hair of float noise below a multiple does not count)."""
    if lot <= 0:
        return x
    return math.ceil(x / lot - 1e-9) * lot


def round_down(x: float, lot: float) -> float:
    if lot <= 0:
        return x
    return math.floor(x / lot + 1e-9) * lot


def split_qty(qty: float, parts: int, lot: float, unit: float, min_notional: float) -> list[float]:
    """Split `qty` contracts into at most `parts` children, each a lot multiple (the last takes the
    rest) and none below the minimum notional (fewer children when needed)."""
    parts = max(1, int(parts))
    if unit > 0 and min_notional > 0:
        parts = max(1, min(parts, int(qty * unit / min_notional)))
    if lot > 0:
        parts = max(1, min(parts, int(qty / lot + 1e-9)))
    if parts == 1:
        return [qty]
    child = round_up(qty / parts, lot)
    out: list[float] = []
    left = qty
    while left > 1e-12 * max(qty, 1.0) and len(out) < parts - 1:
        take = min(child, left)
        out.append(take)
        left -= take
    if left > 1e-12 * max(qty, 1.0):
        if out and left * unit < min_notional:
            out[-1] += left
        else:
            out.append(left)
    return out


class AccountView:
    """One account's open positions as arrays, and projections of the account after reductions.

    Local index k refers to `self.pos[k]` (a Book position index). A reduction vector `r` holds
    contracts to close per local position (0 <= r <= size).
    """

    def __init__(self, book: Book, account: int, impact: ImpactModel) -> None:
        if not 0 <= account < book.n_accounts:
            raise InputError(f"account index {account} out of range")
        self.book = book
        self.account = account
        self.account_id = book.info[account].id
        self.impact = impact
        pos = book.account_positions(account)
        pos = pos[book.pos_qty[pos] != 0]
        self.pos = pos
        self.inst = book.pos_instrument[pos]
        self.mark = book.mark[self.inst].astype(np.float64)
        if np.isnan(self.mark).any():
            missing = sorted({book.instruments[i].symbol for i in self.inst[np.isnan(self.mark)]})
            raise InputError(f"account {self.account_id}: no mark price for {', '.join(missing)}; cannot plan")
        self.symbols = [book.instruments[i].symbol for i in self.inst]
        qty = book.pos_qty[pos].astype(np.float64)
        self.size = np.abs(qty)
        self.sign = np.sign(qty)
        self.close_side = -self.sign.astype(np.int64)  # the side of an order that reduces
        self.unit = book.contract_size[self.inst] * self.mark  # notional per contract
        self.notional = self.size * self.unit
        insts = [book.instruments[i] for i in self.inst]
        self.depth = np.array([impact.depth(i) for i in insts], dtype=np.float64)
        self.lot = np.array([i.lot_size for i in insts], dtype=np.float64)
        self.min_notional = np.array([i.min_notional for i in insts], dtype=np.float64)
        self.group = [i.group or i.symbol for i in insts]
        self.underlying = [i.underlying or i.symbol for i in insts]
        self.liquidate_last = book.pos_liquidate_last[pos].copy()
        self.opened: list[datetime | None] = [book.pos_opened[p] for p in pos]
        self.bracket = book.pos_bracket[pos].copy()
        self.mm = book.maintenance_margin[pos].copy()
        self.upnl = book.unrealized_pnl[pos].copy()
        self.isolated = bool(book.isolated[account])
        self.iso_margin = book.pos_isolated_margin[pos].copy()
        self.equity = float(book.equity[account])
        self.mm_total = float(book.acct_mm[account])
        self.ratio_now = float(book.ratio[account])
        self.n = pos.size
        # The guard's ratio divides by MM + its add-ons ([risk.maintenance], cross accounts): a
        # plan aims at that ratio, taking the add-ons to shrink in proportion to the MM (exact for
        # the volatility add-on; the impact add-on shrinks faster, so this errs on the safe side).
        addon = float(book.acct_mm_addon[account]) if book._mm_addon_on and not self.isolated else 0.0
        self.mm_scale = 1.0 + addon / self.mm_total if addon > 0 and self.mm_total > 0 else 1.0
        self.mm_total *= self.mm_scale  # plans report the MM the guard's ratio uses, before and after

    # ------------------------------------------------------------------ projections
    def brackets_after(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(maintenance margin, bracket) per position after closing r contracts of each."""
        t = self.book.table
        n = np.maximum(self.size - r, 0.0) * self.unit
        b = margin.walk_brackets(n, self.bracket, t)
        return n * t.mmr[b] - t.cum[b], b

    def costs(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(slippage, fee) per position, each reduction sent as one order."""
        n = r * self.unit
        return np.asarray(self.impact.slippage(n, self.depth)), np.asarray(self.impact.fee(n))

    def project(self, r: np.ndarray, cost: float | None = None) -> tuple[float, float, float]:
        """(equity, maintenance margin, ratio) after the reductions r; `cost` overrides the
        one-order-per-position estimate (sliced plans cost less)."""
        if cost is None:
            slip, fee = self.costs(r)
            cost = float(slip.sum() + fee.sum())
        equity = self.equity - cost
        mm, _ = self.brackets_after(r)
        mm_total = float(mm.sum()) * self.mm_scale
        if self.isolated:
            left = np.where(self.size > 0, np.maximum(self.size - r, 0.0) / np.where(self.size > 0, self.size, 1), 0.0)
            own = (self.iso_margin + self.upnl) * left
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios = np.where(mm > 0, own / mm, np.inf)
            ratio = float(ratios.min(initial=np.inf))
        else:
            ratio = equity / mm_total if mm_total > 0 else math.inf
        return equity, mm_total, ratio

    def meets(self, r: np.ndarray, target: float) -> bool:
        ratio = self.project(r)[2]
        return ratio >= target * (1 - TARGET_RTOL) if math.isfinite(target) else ratio == math.inf

    # ------------------------------------------------------------------ venue rules
    def finalize(self, k: int, x: float) -> float:
        """A reduction of x contracts on position k made sendable: rounded up to the lot (never
        beyond the position), raised to the minimum notional, and widened to a full close when
        the remainder would fall below the minimum notional."""
        size = float(self.size[k])
        if x <= 0:
            return 0.0
        lot, unit, mn = float(self.lot[k]), float(self.unit[k]), float(self.min_notional[k])
        x = min(round_up(x, lot), size)
        if x * unit < mn:
            x = min(round_up(mn / unit, lot), size)
        left = size - x
        if left <= size * 1e-9 or (mn > 0 and left * unit < mn):
            x = size
        return x

    def min_reduction(self, k: int, base: np.ndarray, target: float) -> float | None:
        """The smallest sendable reduction of position k (others as in `base`) that reaches the
        target, or None when even closing it does not."""
        r = base.copy()

        def ok(x: float) -> bool:
            r[k] = x
            return self.meets(r, target)

        size = float(self.size[k])
        if not ok(size):
            return None
        # The ratio is continuous in x but need not be monotone (costs grow as margin falls): scan
        # a grid for the first passing point, then bisect the step before it.
        grid = np.linspace(0.0, size, 33)
        lo = 0.0
        hi = size
        for x in grid[1:]:
            if ok(float(x)):
                hi = float(x)
                break
            lo = float(x)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if mid <= lo or mid >= hi:
                break
            if ok(mid):
                hi = mid
            else:
                lo = mid
        x = self.finalize(k, hi)
        # Rounding up only helps while the ratio rises with the reduction; check, and step on if not.
        for _ in range(8):
            if ok(x) or x >= size:
                break
            x = self.finalize(k, x + max(float(self.lot[k]), size * 1e-6))
        if not ok(x):
            x = size
        return x

    # ------------------------------------------------------------------ ordering
    def ranked(self, priority: Priority) -> list[int]:
        """Local position indices in priority order; liquidate_last positions always last."""
        if priority == "risk":
            key = [(-self.mm[k], -self.notional[k]) for k in range(self.n)]
        elif priority == "size":
            key = [(-self.notional[k], -self.mm[k]) for k in range(self.n)]
        elif priority == "market":
            key = [(-self.depth[k], -self.mm[k]) for k in range(self.n)]
        elif priority == "time":
            key = [
                (self.opened[k].timestamp() if self.opened[k] is not None else math.inf, -self.mm[k])
                for k in range(self.n)
            ]
        else:
            raise ValueError(f"priority must be risk, size, market or time, got {priority!r}")
        return sorted(range(self.n), key=lambda k: (bool(self.liquidate_last[k]), *key[k], k))

    # ------------------------------------------------------------------ notes
    def tier_notes(self, r: np.ndarray) -> list[str]:
        t = self.book.table
        _, after = self.brackets_after(r)
        notes = []
        for k in range(self.n):
            if r[k] <= 0:
                continue
            sym = self.symbols[k]
            if r[k] >= self.size[k]:
                notes.append(f"closes {sym}")
                continue
            b0, b1 = int(self.bracket[k]), int(after[k])
            if b1 < b0:
                start = int(t.start[self.inst[k]])
                notes.append(
                    f"drops {sym} from tier {b0 - start + 1} ({pct(float(t.mmr[b0]))}) "
                    f"to tier {b1 - start + 1} ({pct(float(t.mmr[b1]))})"
                )
        return notes

    # ------------------------------------------------------------------ orders
    def order(
        self,
        n: int,
        k: int,
        qty: float,
        slice_: int = 0,
        delay_s: float = 0.0,
        order_type: str = "market",
        limit_offset: float | None = None,
        stop_offset: float | None = None,
    ) -> PlannedOrder:
        side = int(self.close_side[k])
        mark = float(self.mark[k])
        notional = qty * float(self.unit[k])
        frac = float(self.impact.slippage_fraction(notional, float(self.depth[k])))
        ref = mark
        stop_price = None
        if stop_offset is not None:
            stop_price = mark * (1 + side * stop_offset)
            ref = stop_price
        limit_price = None if limit_offset is None else mark * (1 + side * limit_offset)
        est_price = ref * (1 + side * frac)
        if limit_price is not None:
            est_price = min(est_price, limit_price) if side > 0 else max(est_price, limit_price)
        return PlannedOrder(
            n=n,
            symbol=self.symbols[k],
            position=int(self.pos[k]),
            side=side,
            qty=float(qty),
            mark=mark,
            notional=notional,
            est_price=est_price,
            # Impact from the trigger price for a stop (the move to the stop is the market's, not
            # the order's); from the mark otherwise.
            est_slippage=notional * (frac if stop_price is not None else abs(est_price - ref) / mark),
            est_fee=float(self.impact.fee(notional)),
            slice=slice_,
            delay_s=delay_s,
            order_type=order_type,
            limit_price=limit_price,
            limit_offset=limit_offset,
            stop_price=stop_price,
        )


def plan_for(
    view: AccountView,
    kind: str,
    strategy: str,
    method: str,
    orders: list[PlannedOrder],
    projected: tuple[float, float, float],
    action_id: str,
    **extra: Any,
) -> Plan:
    """A Plan for the account behind `view`: its figures now, and `projected` (equity,
    maintenance margin, ratio) once the orders fill."""
    equity, mm, ratio = projected
    return Plan(
        action_id=action_id,
        account=view.account,
        account_id=view.account_id,
        kind=kind,
        strategy=strategy,
        method=method,
        orders=orders,
        equity=view.equity,
        maintenance_margin=view.mm_total,
        ratio=view.ratio_now,
        projected_equity=equity,
        projected_maintenance_margin=mm,
        projected_ratio=ratio,
        **extra,
    )
