"""`capguard eval`: value a JSON snapshot with the same engine the guard runs.

Input and output are documented in docs/eval.md. Thresholds are used as given (seed
defaults when absent), with no dynamic adjustment; `level` is the instantaneous
classification of the ratio.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.book import Book
from engine.levels import LEVEL_NAMES, Thresholds
from engine.model import Account, InputError, Instrument


class Snapshot(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instruments: list[Instrument]
    accounts: list[Account]
    prices: dict[str, float]
    thresholds: Thresholds = Field(default_factory=Thresholds)


def format_validation_error(exc: ValidationError, data: Any = None) -> str:
    """One line per problem, naming the record (e.g. `accounts[0] (acct-1).positions[2].qty`)."""
    lines = []
    for err in exc.errors():
        parts: list[str] = []
        node = data
        for loc in err["loc"]:
            if isinstance(loc, int):
                label = f"[{loc}]"
                node = node[loc] if isinstance(node, list) and loc < len(node) else None
                if isinstance(node, dict):
                    name = node.get("id") or node.get("symbol")
                    if isinstance(name, str):
                        label += f" ({name})"
                parts.append(label)
            else:
                node = node.get(loc) if isinstance(node, dict) else None
                parts.append(("." if parts else "") + str(loc))
        where = "".join(parts) or "snapshot"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {msg}")
    return "\n".join(lines)


def _num(x: float) -> float | None:
    """JSON has no infinities or NaN: those are null."""
    x = float(x)
    return x if math.isfinite(x) else None


def load_snapshot(text: str) -> Snapshot:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"snapshot is not valid JSON: {exc}") from None
    try:
        return Snapshot.model_validate(data)
    except ValidationError as exc:
        raise InputError(format_validation_error(exc, data)) from None


def evaluate(snapshot: Snapshot) -> dict[str, Any]:
    book = Book(snapshot.instruments, snapshot.accounts, snapshot.thresholds)
    held = {book.instruments[i].symbol for i in np.unique(book.pos_instrument)}
    missing = sorted(held - snapshot.prices.keys())
    if missing:
        raise InputError(f"prices: no price for held symbol(s) {', '.join(missing)}")
    book.set_prices(snapshot.prices, received=0.0)
    book.revalue()
    liq = book.liquidation_prices()
    reserved = book.reserved_initial_margin()
    mark = book.mark[book.pos_instrument]
    mmr = book.table.mmr[book.pos_bracket]
    cum = book.table.cum[book.pos_bracket]
    out = []
    for a, info in enumerate(book.info):
        equity = book.equity[a]
        im = book.acct_im[a]
        free = equity - im
        positions = []
        for p in book.account_positions(a):
            lp = liq[p]
            positions.append(
                {
                    "symbol": book.instruments[book.pos_instrument[p]].symbol,
                    "qty": float(book.pos_qty[p]),
                    "notional": float(book.notional[p]),
                    "unrealized_pnl": float(book.unrealized_pnl[p]),
                    "mmr": float(mmr[p]),
                    "maintenance_amount": float(cum[p]),
                    "maintenance_margin": float(book.maintenance_margin[p]),
                    "initial_margin": _num(book.initial_margin[p]),
                    "liquidation_price": _num(lp),
                    "liquidation_distance_pct": _num(abs(mark[p] - lp) / mark[p] * 100.0)
                    if math.isfinite(lp)
                    else None,
                }
            )
        with np.errstate(divide="ignore", invalid="ignore"):
            utilization = im / equity if equity > 0 else math.nan
            leverage = book.acct_notional[a] / equity if equity > 0 else math.nan
        out.append(
            {
                "id": info.id,
                "equity": float(equity),
                "unrealized_pnl": float(book.acct_upnl[a]),
                "initial_margin": _num(im),
                "maintenance_margin": float(book.acct_mm[a]),
                "free_margin": _num(free),
                "available_margin": _num(free - reserved[a]),
                "margin_ratio": _num(book.ratio[a]),
                "utilization": _num(utilization),
                "leverage": _num(leverage),
                "level": LEVEL_NAMES[book.level[a]],
                "positions": positions,
            }
        )
    return {"accounts": out}
