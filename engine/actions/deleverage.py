"""Deleveraging: the smallest reduction that brings an account back to a target margin ratio.

"Smallest" is measured after the estimated cost of getting there: the ratio after a plan is

    (equity - slippage - fees) / maintenance margin after

with the maintenance margin of each reduced position recomputed in the bracket its new
notional falls in (tiered, so dropping a position one tier lowers its rate: often the cheapest
step). Strategies, each producing its own order list:

proportional  every position by the same fraction (bisection on the fraction)
risk          positions by maintenance-margin contribution, largest first; on each the minimal
              reduction reaching the target (bisection on the quantity), else close it and go on
time          the risk plan split into N TWAP slices, `recheck` set so execution stops once
              the account has recovered
market        the most liquid instruments (book depth) first, each order sliced so no slice
              exceeds a participation rate of the depth

Reductions are rounded UP to the lot size (never beyond the position), raised to the minimum
notional, and widened to a full close when the remainder would be below the minimum notional.
Positions flagged `liquidate_last` are touched only when nothing else is enough. Every planned
order is reduce-only. A plan sends nothing: a dry run is the plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from engine.actions.impact import ImpactModel
from engine.actions.plan import AccountView, Plan, PlannedOrder, new_action_id, plan_for, split_qty
from engine.book import Book

__all__ = ["DeleverageParams", "Plan", "PlannedOrder", "cheapest_step", "plan_deleverage"]

Strategy = Literal["proportional", "risk", "time", "market"]
Method = Literal["market", "limit", "stop", "twap"]
STRATEGIES: tuple[str, ...] = ("proportional", "risk", "time", "market")
METHODS: tuple[str, ...] = ("market", "limit", "stop", "twap")


@dataclass(frozen=True)
class DeleverageParams:
    impact: ImpactModel = field(default_factory=ImpactModel)
    slices: int = 4  # TWAP slices (strategy "time", method "twap")
    slice_interval_s: float = 30.0  # between slices
    participation: float = 0.01  # strategy "market": max slice notional as a share of book depth
    limit_offset: float = 0.002  # method "limit": limit this far beyond the estimated fill (fraction)
    stop_offset: float = 0.005  # method "stop": stop this far beyond the mark, adverse side (fraction)

    def __post_init__(self) -> None:
        if self.slices < 1:
            raise ValueError(f"slices must be at least 1, got {self.slices}")
        if not (math.isfinite(self.slice_interval_s) and self.slice_interval_s >= 0):
            raise ValueError(f"slice_interval_s must be >= 0, got {self.slice_interval_s}")
        if not (0 < self.participation <= 1):
            raise ValueError(f"participation must be in (0, 1], got {self.participation}")
        for name in ("limit_offset", "stop_offset"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0 <= v < 1):
                raise ValueError(f"{name} must be in [0, 1), got {v}")


# ---------------------------------------------------------------------------- reductions
def _proportional_target(view: AccountView, target: float) -> np.ndarray:
    r = np.zeros(view.n)
    first = [k for k in range(view.n) if not view.liquidate_last[k]]
    last = [k for k in range(view.n) if view.liquidate_last[k]]

    def with_f(f: float, ks: list[int], base: np.ndarray) -> np.ndarray:
        rr = base.copy()
        for k in ks:
            rr[k] = view.finalize(k, f * float(view.size[k]))
        return rr

    for group in (first, last):
        if not group:
            continue
        if not view.meets(with_f(1.0, group, r), target):
            r = with_f(1.0, group, r)  # the whole group is not enough: close it, go on
            continue
        lo, hi = 0.0, 1.0
        for f in np.linspace(0.0, 1.0, 33)[1:]:
            if view.meets(with_f(float(f), group, r), target):
                hi = float(f)
                break
            lo = float(f)
        for _ in range(50):
            mid = 0.5 * (lo + hi)
            if mid <= lo or mid >= hi:
                break
            if view.meets(with_f(mid, group, r), target):
                hi = mid
            else:
                lo = mid
        return with_f(hi, group, r)
    return r


def _greedy_target(view: AccountView, order: list[int], target: float) -> np.ndarray:
    r = np.zeros(view.n)
    for k in order:
        if view.meets(r, target):
            break
        x = view.min_reduction(k, r, target)
        r[k] = view.size[k] if x is None else x
    return r


def _greedy_fraction(view: AccountView, order: list[int], fraction: float) -> np.ndarray:
    """Reduce `fraction` of the gross notional, position by position in `order`."""
    r = np.zeros(view.n)
    left = fraction * float(view.notional.sum())
    for k in order:
        if left <= 1e-9 * max(1.0, float(view.notional.sum())):
            break
        x = view.finalize(k, min(float(view.size[k]), left / float(view.unit[k])))
        r[k] = x
        left -= x * float(view.unit[k])
    return r


# ---------------------------------------------------------------------------- orders
def _orders(
    view: AccountView, r: np.ndarray, rank: list[int], strategy: str, method: str, p: DeleverageParams
) -> tuple[list[PlannedOrder], bool]:
    """The order list for reductions r: (orders, recheck)."""
    sliced = strategy in ("time", "market") or method == "twap"
    children: list[tuple[int, int, int, float]] = []  # (slice, rank, k, qty)
    for pos_rank, k in enumerate(rank):
        x = float(r[k])
        if x <= 0:
            continue
        parts = 1
        if strategy == "time" or method == "twap":
            parts = p.slices
        if strategy == "market":
            cap = p.participation * float(view.depth[k])
            parts = max(parts, math.ceil(x * float(view.unit[k]) / cap - 1e-9))
        qtys = split_qty(x, parts, float(view.lot[k]), float(view.unit[k]), float(view.min_notional[k]))
        children.extend((s, pos_rank, k, q) for s, q in enumerate(qtys))
    children.sort(key=lambda c: (c[0], c[1]))
    orders: list[PlannedOrder] = []
    prev_slice = 0
    for n, (s, _, k, q) in enumerate(children, start=1):
        delay = p.slice_interval_s if s != prev_slice else 0.0
        prev_slice = s
        if method == "limit":
            frac = float(view.impact.slippage_fraction(q * float(view.unit[k]), float(view.depth[k])))
            o = view.order(n, k, q, s, delay, "limit", limit_offset=frac + p.limit_offset)
        elif method == "stop":
            o = view.order(n, k, q, s, delay, "stop", stop_offset=p.stop_offset)
        else:
            o = view.order(n, k, q, s, delay, "market")
        orders.append(o)
    return orders, sliced


def _plan(
    view: AccountView,
    r: np.ndarray,
    rank: list[int],
    strategy: str,
    method: str,
    p: DeleverageParams,
    action_id: str | None,
    target: float | None,
    fraction: float | None,
    notes: list[str],
) -> Plan:
    orders, recheck = _orders(view, r, rank, strategy, method, p)
    cost = float(sum(o.est_slippage + o.est_fee for o in orders))
    equity, mm, ratio = view.project(r, cost)
    notes = [*notes, *view.tier_notes(r)]
    last = [view.symbols[k] for k in range(view.n) if view.liquidate_last[k] and r[k] > 0]
    if last:
        notes.append(f"touches liquidate-last {', '.join(last)}: nothing else was enough")
    if target is not None and orders and ratio < target:
        notes.append(f"projected ratio {ratio:.4f} stays below the target {target:g}")
    if method == "stop" and orders:
        notes.append("stop orders rest until the mark crosses them; the projection assumes they fill")
    return plan_for(
        view,
        "deleverage",
        strategy,
        method,
        orders,
        (equity, mm, ratio),
        action_id or new_action_id("dlv"),
        target=target,
        fraction=fraction,
        recheck=recheck and target is not None,
        notes=notes,
    )


def plan_deleverage(
    book: Book,
    account: int,
    target_ratio: float | None = None,
    fraction: float | None = None,
    strategy: Strategy = "risk",
    method: Method = "market",
    params: DeleverageParams | None = None,
    action_id: str | None = None,
) -> Plan:
    """The smallest reduction (after estimated fees and impact) that restores `target_ratio`, or
    a reduction by `fraction` (of every position for "proportional", of the gross notional
    otherwise). Exactly one of the two must be given."""
    p = params or DeleverageParams()
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if (target_ratio is None) == (fraction is None):
        raise ValueError("give exactly one of target_ratio and fraction")
    if target_ratio is not None and not (target_ratio > 0):
        raise ValueError(f"target_ratio must be positive, got {target_ratio}")
    if fraction is not None and not (0 < fraction <= 1):
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    view = AccountView(book, account, p.impact)
    rank = view.ranked("market" if strategy == "market" else "risk")
    notes: list[str] = []
    r = np.zeros(view.n)
    if view.n == 0:
        notes.append("no open positions")
    elif target_ratio is not None:
        if view.meets(r, target_ratio):
            notes.append(f"ratio {view.ratio_now:.4f} already at or above the target {target_ratio:g}")
        elif strategy == "proportional":
            r = _proportional_target(view, target_ratio)
        else:
            r = _greedy_target(view, rank, target_ratio)
    else:
        assert fraction is not None
        if strategy == "proportional":
            r = np.array([view.finalize(k, fraction * float(view.size[k])) for k in range(view.n)])
        else:
            r = _greedy_fraction(view, rank, fraction)
    return _plan(view, r, rank, strategy, method, p, action_id, target_ratio, fraction, notes)


def cheapest_step(
    book: Book,
    account: int,
    target_ratio: float,
    params: DeleverageParams | None = None,
    action_id: str | None = None,
) -> Plan | None:
    """Among single-position reductions that restore the target, the one with the smallest
    reduced notional (the WARNING-level "cheapest step back to SAFE"). None when no single
    position can do it; a plan without orders when the account is already at the target."""
    p = params or DeleverageParams()
    view = AccountView(book, account, p.impact)
    r = np.zeros(view.n)
    if view.n == 0 or view.meets(r, target_ratio):
        return _plan(view, r, [], "cheapest", "market", p, action_id, target_ratio, None, ["already at the target"])
    best: tuple[tuple[bool, float], int, float] | None = None
    for k in range(view.n):
        x = view.min_reduction(k, r, target_ratio)
        if x is None:
            continue
        key = (bool(view.liquidate_last[k]), x * float(view.unit[k]))
        if best is None or key < best[0]:
            best = (key, k, x)
    if best is None:
        return None
    _, k, x = best
    r[k] = x
    return _plan(view, r, [k], "cheapest", "market", p, action_id, target_ratio, None, [])
