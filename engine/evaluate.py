"""`capguard eval`: value a JSON snapshot with the same engine the guard runs.

Input and output are documented in docs/eval.md; the optional risk analytics (`analytics`,
`history` and the per-instrument `daily_volatility`, `price_scan_range` and
`volatility_scan_range`) in docs/analytics.md. Thresholds are used as given (seed defaults
when absent), with no dynamic adjustment; `level` is the instantaneous classification of the
ratio. Without `analytics` the output is exactly the valuation.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine import margin
from engine.analytics.report import AnalyticsRequest, analytics
from engine.book import Book
from engine.levels import LEVEL_NAMES, Thresholds
from engine.model import Account, InputError, Instrument

_ANALYTICS_FIELDS = ("daily_volatility", "price_scan_range", "volatility_scan_range")


def _positive(v: float | None, what: str) -> float | None:
    if v is not None and not (math.isfinite(v) and v > 0):
        raise ValueError(f"{what} must be a positive finite number, got {v!r}")
    return v


class EvalInstrument(Instrument):
    """An instrument as `capguard eval` reads it: the engine's fields plus analytics inputs,
    stripped (`instrument()`) before the book sees it."""

    daily_volatility: float | None = Field(default=None, description="fraction per day")
    price_scan_range: float | None = Field(default=None, description="absolute price move per unit")
    volatility_scan_range: float | None = Field(default=None, description="volatility move (fraction)")

    @field_validator(*_ANALYTICS_FIELDS)
    @classmethod
    def _positive_finite(cls, v: float | None) -> float | None:
        return _positive(v, "value")

    def instrument(self) -> Instrument:
        return Instrument.model_validate(self.model_dump(exclude=set(_ANALYTICS_FIELDS)))


class Snapshot(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instruments: list[EvalInstrument]
    accounts: list[Account]
    prices: dict[str, float]
    thresholds: Thresholds = Field(default_factory=Thresholds)
    history: dict[str, list[float]] = Field(default_factory=dict, description="daily closes, oldest first")
    analytics: AnalyticsRequest | None = None

    @field_validator("history")
    @classmethod
    def _closes_positive(cls, v: dict[str, list[float]]) -> dict[str, list[float]]:
        for symbol, closes in v.items():
            for n, close in enumerate(closes):
                _positive(close, f"{symbol} close {n}")
        return v


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
    book = Book([i.instrument() for i in snapshot.instruments], snapshot.accounts, snapshot.thresholds)
    held = {book.instruments[i].symbol for i in np.unique(book.pos_instrument)}
    missing = sorted(held - snapshot.prices.keys())
    if missing:
        raise InputError(f"prices: no price for held symbol(s) {', '.join(missing)}")
    unknown = sorted(snapshot.history.keys() - book.symbol_index.keys())
    if unknown:
        raise InputError(f"history: unknown symbol(s) {', '.join(unknown)}")
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
                    "liquidation_distance_pct": _num(margin.liquidation_distance_pct(book.pos_qty[p], mark[p], lp)),
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
    if snapshot.analytics is None:
        return {"accounts": out}
    per_account, whole = analytics(
        book,
        _per_instrument(snapshot, "daily_volatility"),
        _per_instrument(snapshot, "price_scan_range"),
        snapshot.history,
        snapshot.analytics,
    )
    for record, figures in zip(out, per_account, strict=True):
        record["analytics"] = figures
    return {"accounts": out, "analytics": whole}


def _per_instrument(snapshot: Snapshot, name: str) -> np.ndarray:
    """One optional instrument field as an array in instrument order, NaN where absent."""
    return np.array([math.nan if (v := getattr(i, name)) is None else v for i in snapshot.instruments])
