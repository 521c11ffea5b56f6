"""Everything the guard knows about one account, as plain data (for the console and the API)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from engine import thresholds as dyn
from engine.actions.deleverage import cheapest_step
from engine.clock import iso
from engine.ladder import REDUCE_REASONS, DataState, TradingState
from engine.levels import LEVEL_NAMES, Level
from engine.margin import liquidation_distance_pct
from engine.risk_view import account_risk

if TYPE_CHECKING:
    from engine.guard import Guard


def _num(x: float) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def margin_block(g: Guard, a: int) -> dict[str, Any]:
    """How the guard's maintenance and initial margin of account `a` are made up ([risk]).

    maintenance: the venue's MM, each add-on (null when not enabled), whether they are
    applied (never to isolated accounts) and the MM the guard's ratio divides by
    (ratio = equity / maintenance.used). initial: the venue's IM (brackets), the method of
    each position, the account's IM per method and in total (`used`: what the utilisation,
    free margin and GET /margin use). Add-ons and IM by method are as of the last refresh
    (once a second); with the defaults every method is `position` and used = venue.
    """
    book = g.book
    pos = book.account_positions(a)
    venue_mm = float(book.acct_mm[a])
    applied = bool(book._mm_addon_on and not book.isolated[a])
    addons = {name: None if v is None else _num(v[a]) for name, v in g.mm_addons.items()}
    venue_im = _num(book.acct_im[a])
    symbols = [book.instruments[int(i)].symbol for i in book.pos_instrument[pos].tolist()]
    im = g.im_methods
    if im is None:
        methods = ["position"] * pos.size
        by_method = {"position": venue_im} if pos.size else {}
        used = venue_im
    else:
        methods = [str(m) for m in im.position_method[pos].tolist()]
        by_method = {name: _num(v[a]) for name, v in im.by_method.items() if name in methods}
        used = _num(im.total[a])
    return {
        "maintenance": {
            "venue": _num(venue_mm),
            "volatility_addon": addons["volatility"],
            "impact_addon": addons["impact"],
            "addons_applied": applied,
            "used": _num(venue_mm + float(book.acct_mm_addon[a]) if applied else venue_mm),
        },
        "initial": {
            "venue": venue_im,
            "positions": [{"symbol": s, "method": m} for s, m in zip(symbols, methods, strict=True)],
            "by_method": by_method,
            "used": used,
        },
    }


def account_detail(g: Guard, account_id: str) -> dict[str, Any]:
    a = g.account_index(account_id)
    book, lad, info = g.book, g.ladder, g.book.info[a]
    now = g.clock.now()
    pos = book.account_positions(a)
    liq = book.liquidation_prices(pos)
    positions = []
    for k, p in enumerate(pos.tolist()):
        i = int(book.pos_instrument[p])
        mark = float(book.mark[i])
        lp = float(liq[k])
        b = int(book.pos_bracket[p])
        positions.append(
            {
                "symbol": book.instruments[i].symbol,
                "qty": float(book.pos_qty[p]),
                "entry_price": float(book.pos_entry[p]),
                "mark_price": _num(mark),
                "unrealized_pnl": _num(book.unrealized_pnl[p]),
                "notional": _num(book.notional[p]),
                "tier": b - int(book.table.start[i]) + 1,
                "mmr": float(book.table.mmr[b]),
                "maintenance_margin": _num(book.maintenance_margin[p]),
                "initial_margin": _num(book.initial_margin[p]),
                "liquidation_price": _num(lp),
                "liquidation_distance_pct": _num(liquidation_distance_pct(book.pos_qty[p], mark, lp)),
                "liquidate_last": bool(book.pos_liquidate_last[p]),
                "isolated_margin": _num(book.pos_isolated_margin[p]),
            }
        )
    orders = [
        {
            "symbol": book.instruments[int(book.ord_instrument[k])].symbol,
            "side": "buy" if book.ord_side[k] > 0 else "sell",
            "qty": float(book.ord_qty[k]),
            "price": float(book.ord_price[k]),
            "reduce_only": bool(book.ord_reduce_only[k]),
        }
        for k in np.flatnonzero(book.ord_account == a).tolist()
    ]
    vol = float(
        np.nan_to_num(
            dyn.account_volatility(book.pos_account, book.pos_instrument, book.notional, g._inst_vol, book.n_accounts)[
                a
            ]
        )
    )
    dd = float(dyn.drawdown(book.equity[a : a + 1], g.equity_peak[a : a + 1])[0])
    override = g.protection.overrides.get(info.id)
    explained = dyn.explain(
        g.config.thresholds, g.config.dynamic_thresholds, float(book.equity[a]), info.risk_class, vol, dd, override
    )
    equity = float(book.equity[a])
    margin = margin_block(g, a)
    im = margin["initial"]["used"]
    im = np.nan if im is None else im
    records = g.journal.records(account=info.id, limit=200, newest_first=True)
    timeline = [
        r
        for r in records
        if r["kind"] in ("transition", "decision", "alert", "operator", "outcome", "threshold", "data_state")
    ]
    latest = next((r.get("action_id") for r in records if r["kind"] == "decision" and r.get("action_id")), None)
    if latest is None:
        latest = next((r["action_id"] for r in records if r.get("action_id")), None)
    flow = g.journal.records(action_id=latest) if latest else []
    step = None
    if lad.level[a] >= Level.WARNING:
        plan = cheapest_step(book, a, float(book.warning[a]) + g.config.deleverage.target_buffer)
        step = plan.to_dict() if plan else None
    flags = int(lad.reduce_flags[a])
    return {
        "id": info.id,
        "name": info.name,
        "desk": info.desk,
        "strategy": info.strategy,
        "risk_class": info.risk_class,
        "margin_mode": info.margin_mode,
        "time": iso(now),
        "wallet_balance": float(book.wallet[a]),
        "equity": equity,
        "unrealized_pnl": float(book.acct_upnl[a]),
        "initial_margin": _num(im),
        "maintenance_margin": float(book.acct_mm[a]),
        "free_margin": _num(equity - im),
        "margin_ratio": _num(book.ratio[a]),
        "utilization": _num(im / equity) if equity > 0 else None,
        "leverage": _num(book.acct_notional[a] / equity) if equity > 0 else None,
        "drawdown": dd,  # current, from the equity peak since the guard started
        "max_drawdown": float(g.max_drawdown[a]),  # the worst since then
        "level": LEVEL_NAMES[lad.level[a]],
        "ratio_level": LEVEL_NAMES[book.level[a]] if book.level[a] >= 0 else None,
        "data_state": DataState(int(lad.data_state[a])).name,
        "trading_state": TradingState(int(lad.trading_state[a])).name,
        "reducing_because": [name for bit, name in REDUCE_REASONS.items() if flags & bit],
        "held_until": iso(lad.held_until[a]) if lad.held_until[a] > now else None,
        "protection_mode": "shadow" if g.protection.shadow[a] else "active",
        "positions": positions,
        "open_orders": orders,
        "history": [(iso(t), _num(r)) for t, r in g.history[a]],
        "thresholds": explained,
        "timeline": timeline,
        "latest_action": {"action_id": latest, "records": flow},
        "cheapest_step": step,
        "margin": margin,
        "risk": account_risk(g, a),
        "scheduled": [
            {"schedule_id": sid, "action": s["action"], "at": iso(s["at"])}
            for sid, s in g.protection.schedule.items()
            if s["account"] == info.id
        ],
    }
