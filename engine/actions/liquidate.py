"""Forced liquidation: close every position of an account, reduce-only, at the least impact
the urgency allows.

immediate  everything now: one reduce-only market order per position (or an IOC with a wide
           limit, `immediate_order_type="ioc"`).
orderly    each position cut into slices sized with the square-root impact model so a slice's
           estimated slippage stays under `max_slice_slippage` (and under a participation rate
           of the book depth); slices go out every `slice_interval_s` as IOC orders whose limit
           offset widens slice by slice (more aggressive as time passes). After `deadline_s`
           the executor sends whatever is left at market.

Order of closing: hedged sets first (opposite-signed positions in the same instrument group,
or underlying with `hedge_by="underlying"`), closed together slice by slice so the account
stays hedged while it shrinks; then the other positions by `priority` (risk: maintenance
margin, size: notional, market: most liquid first, time: oldest first); positions flagged
`liquidate_last` always last. Orderly slices of all positions run in parallel (slice s of every
position goes out in the same round) so the account is flat as early as the impact caps allow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from engine.actions.impact import ImpactModel
from engine.actions.plan import AccountView, Plan, PlannedOrder, Priority, new_action_id, plan_for, split_qty
from engine.book import Book

__all__ = ["LiquidationParams", "plan_liquidation"]

Mode = Literal["immediate", "orderly"]


@dataclass(frozen=True)
class LiquidationParams:
    impact: ImpactModel = field(default_factory=ImpactModel)
    max_slice_slippage: float = 0.001  # orderly: a slice's estimated slippage fraction stays under this
    participation: float | None = 0.05  # orderly: and its notional under this share of book depth
    slice_interval_s: float = 10.0
    max_slices: int = 60  # per position (slices grow when a position would need more)
    deadline_s: float = 300.0  # orderly: after this, the rest goes at market
    ioc_offset: float = 0.0005  # orderly: first slice's IOC limit this far beyond the estimated fill
    ioc_offset_step: float = 0.0005  # widening per slice
    immediate_order_type: Literal["market", "ioc"] = "market"
    immediate_ioc_offset: float = 0.05  # immediate IOC limit: at least this far through the mark
    hedge_by: Literal["group", "underlying"] = "group"

    def __post_init__(self) -> None:
        if not (0 < self.max_slice_slippage < 1):
            raise ValueError(f"max_slice_slippage must be in (0, 1), got {self.max_slice_slippage}")
        if self.participation is not None and not (0 < self.participation <= 1):
            raise ValueError(f"participation must be in (0, 1], got {self.participation}")
        if self.max_slices < 1:
            raise ValueError(f"max_slices must be at least 1, got {self.max_slices}")
        for name in ("slice_interval_s", "deadline_s", "ioc_offset", "ioc_offset_step", "immediate_ioc_offset"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")


def _hedged_sets(view: AccountView, rank: list[int], hedge_by: str) -> list[list[int]]:
    """Sets of opposite-signed positions sharing a group (or underlying), in rank order."""
    keys = view.group if hedge_by == "group" else view.underlying
    by_key: dict[str, list[int]] = {}
    for k in rank:
        if not view.liquidate_last[k]:
            by_key.setdefault(keys[k], []).append(k)
    sets = [ks for ks in by_key.values() if len(ks) > 1 and len({float(view.sign[k]) for k in ks}) > 1]
    # The set holding the most margin first.
    sets.sort(key=lambda ks: -float(sum(view.mm[k] for k in ks)))
    return sets


def plan_liquidation(
    book: Book,
    account: int,
    mode: Mode = "immediate",
    priority: Priority = "risk",
    params: LiquidationParams | None = None,
    action_id: str | None = None,
) -> Plan:
    """Close every position of `account` with reduce-only orders (see the module docstring)."""
    p = params or LiquidationParams()
    if mode not in ("immediate", "orderly"):
        raise ValueError(f"mode must be immediate or orderly, got {mode!r}")
    view = AccountView(book, account, p.impact)
    rank = view.ranked(priority)
    hedged = _hedged_sets(view, rank, p.hedge_by)
    in_sets = {k for ks in hedged for k in ks}
    legs: list[list[int]] = [*hedged, *[[k] for k in rank if k not in in_sets]]
    notes: list[str] = []
    keyname = "group" if p.hedge_by == "group" else "underlying"
    for ks in hedged:
        key = (view.group if p.hedge_by == "group" else view.underlying)[ks[0]]
        notes.append(f"closes hedged {'/'.join(view.symbols[k] for k in ks)} ({keyname} {key}) together first")
    last = [view.symbols[k] for k in rank if view.liquidate_last[k]]
    if last:
        notes.append(f"liquidate-last {', '.join(last)} closed last")

    children: list[tuple[int, int, int, float]] = []  # (slice, leg order, k, qty)
    order_rank = 0
    for ks in legs:
        if mode == "immediate":
            parts = [1] * len(ks)
        else:
            caps = []
            for k in ks:
                cap = float(p.impact.max_notional(float(view.depth[k]), p.max_slice_slippage))
                if p.participation is not None:
                    cap = min(cap, p.participation * float(view.depth[k]))
                caps.append(min(p.max_slices, max(1, math.ceil(float(view.notional[k]) / cap - 1e-9))))
            # A hedged set shrinks leg by leg in step: every member gets the same slice count.
            parts = [max(caps)] * len(ks)
        for k, n_parts in zip(ks, parts, strict=True):
            qtys = split_qty(
                float(view.size[k]), n_parts, float(view.lot[k]), float(view.unit[k]), float(view.min_notional[k])
            )
            children.extend((s, order_rank, k, q) for s, q in enumerate(qtys))
            order_rank += 1
    children.sort(key=lambda c: (c[0], c[1]))

    orders: list[PlannedOrder] = []
    prev = 0
    for n, (s, _, k, q) in enumerate(children, start=1):
        delay = p.slice_interval_s if s != prev else 0.0
        prev = s
        frac = float(p.impact.slippage_fraction(q * float(view.unit[k]), float(view.depth[k])))
        if mode == "orderly":
            offset = frac + p.ioc_offset + p.ioc_offset_step * s
            orders.append(view.order(n, k, q, s, delay, "ioc", limit_offset=offset))
        elif p.immediate_order_type == "ioc":
            offset = max(frac + p.ioc_offset, p.immediate_ioc_offset)
            orders.append(view.order(n, k, q, 0, 0.0, "ioc", limit_offset=offset))
        else:
            orders.append(view.order(n, k, q, 0, 0.0, "market"))
    if mode == "orderly" and orders:
        n_slices = 1 + max(o.slice for o in orders)
        notes.append(
            f"{n_slices} slice(s) every {p.slice_interval_s:g}s, each under {p.max_slice_slippage * 1e4:g} bps "
            f"estimated slippage; after {p.deadline_s:g}s the rest goes at market"
        )
    if view.n == 0:
        notes.append("no open positions")
    cost = float(sum(o.est_slippage + o.est_fee for o in orders))
    r = view.size.copy()
    equity, mm, ratio = view.project(r, cost)
    return plan_for(
        view,
        "liquidate",
        priority,
        mode,
        orders,
        (equity, mm, ratio),
        action_id or new_action_id("liq"),
        target=None,
        recheck=False,
        deadline_s=p.deadline_s if mode == "orderly" else None,
        notes=notes,
    )
