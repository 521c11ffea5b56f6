"""Domain records at the boundary: instruments, brackets, accounts, positions, orders.

These are pydantic models that refuse unknown fields and impossible values with a message
naming the record. Inside the hot path the book keeps plain numpy arrays built from them.

Conventions: linear contracts, one collateral (quote) currency. Quantities are signed
(positive long, negative short) in contracts; notional = |qty| * contract_size * price, in
quote currency. Rates (mmr) are fractions, not percent.
"""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class InputError(ValueError):
    """Input refused whole; the message names the record and the problem."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return value


class Bracket(Strict):
    """One maintenance-margin tier: notional in [floor, cap) pays `notional * mmr - maintenance_amount`.

    `maintenance_amount` is Binance's `cum`; when omitted it is derived so that maintenance
    margin is continuous at the tier boundary. `max_leverage` sets the initial margin rate
    (1 / max_leverage); when omitted, initial-margin values are null.
    """

    floor: float = Field(ge=0)
    cap: float | None = None
    mmr: float = Field(ge=0, lt=1)
    max_leverage: float | None = Field(default=None, gt=0)
    maintenance_amount: float | None = None

    @field_validator("floor", "mmr", "max_leverage", "maintenance_amount")
    @classmethod
    def _is_finite(cls, v: float | None) -> float | None:
        return v if v is None else _finite(v, "value")

    @model_validator(mode="after")
    def _cap_above_floor(self) -> Bracket:
        if self.cap is not None and not (math.isfinite(self.cap) and self.cap > self.floor):
            raise ValueError(f"bracket cap {self.cap} must be a finite number above its floor {self.floor}")
        return self


def resolve_brackets(symbol: str, brackets: list[Bracket]) -> list[Bracket]:
    """Check a bracket table and fill in omitted caps and maintenance amounts.

    Refuses unsorted, overlapping or gapped tables, and a first floor other than 0.
    The cap of bracket n, when omitted, is the floor of bracket n+1 (infinite for the last).
    """
    if not brackets:
        raise InputError(f"instrument {symbol}: at least one maintenance-margin bracket is required")
    if brackets[0].floor != 0:
        raise InputError(f"instrument {symbol}: the first bracket must start at floor 0, got {brackets[0].floor}")
    out: list[Bracket] = []
    cum_prev = 0.0
    mmr_prev = 0.0
    for n, b in enumerate(brackets):
        nxt = brackets[n + 1] if n + 1 < len(brackets) else None
        cap = b.cap
        if nxt is not None:
            if nxt.floor <= b.floor:
                raise InputError(
                    f"instrument {symbol}: brackets must be sorted by floor; bracket {n + 1} floor "
                    f"{nxt.floor} is not above bracket {n} floor {b.floor}"
                )
            if cap is None:
                cap = nxt.floor
            elif cap > nxt.floor:
                raise InputError(
                    f"instrument {symbol}: bracket {n} (cap {cap}) overlaps bracket {n + 1} (floor {nxt.floor})"
                )
            elif cap < nxt.floor:
                raise InputError(
                    f"instrument {symbol}: gap between bracket {n} (cap {cap}) and bracket {n + 1} (floor {nxt.floor})"
                )
        cum = b.maintenance_amount
        if cum is None:
            cum = b.floor * (b.mmr - mmr_prev) + cum_prev if n > 0 else 0.0
        out.append(b.model_copy(update={"cap": cap, "maintenance_amount": cum}))
        cum_prev, mmr_prev = cum, b.mmr
    return out


class Instrument(Strict):
    """A linear contract quoted and margined in the collateral currency."""

    symbol: str = Field(min_length=1)
    underlying: str | None = None
    group: str | None = None
    contract_size: float = 1.0
    lot_size: float = Field(default=0.0, ge=0)
    tick_size: float = Field(default=0.0, ge=0)
    min_notional: float = Field(default=0.0, ge=0)
    avg_daily_volume: float | None = Field(default=None, gt=0, description="quote currency per day")
    book_depth: float | None = Field(default=None, gt=0, description="quote currency within 1% of mark")
    brackets: list[Bracket]

    @field_validator("contract_size")
    @classmethod
    def _positive_size(cls, v: float) -> float:
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"contract_size must be a positive finite number, got {v!r}")
        return v

    @model_validator(mode="after")
    def _resolve(self) -> Instrument:
        try:
            resolved = resolve_brackets(self.symbol, list(self.brackets))
        except InputError as exc:
            raise ValueError(str(exc)) from None
        object.__setattr__(self, "brackets", resolved)
        if self.underlying is None:
            object.__setattr__(self, "underlying", self.symbol)
        if self.group is None:
            object.__setattr__(self, "group", self.underlying)
        return self


class Position(Strict):
    symbol: str
    qty: float = Field(description="signed contracts: positive long, negative short")
    entry_price: float
    opened: datetime | None = None
    isolated_margin: float | None = Field(default=None, ge=0)
    liquidate_last: bool = False

    @field_validator("qty")
    @classmethod
    def _qty_finite(cls, v: float) -> float:
        return _finite(v, "qty")

    @field_validator("entry_price")
    @classmethod
    def _entry_positive(cls, v: float) -> float:
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"entry_price must be a positive finite number, got {v!r}")
        return v


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OpenOrder(Strict):
    symbol: str
    side: Side
    qty: float = Field(gt=0)
    price: float = Field(gt=0)
    reduce_only: bool = False

    @field_validator("qty", "price")
    @classmethod
    def _order_finite(cls, v: float) -> float:
        return _finite(v, "order value")


class Account(Strict):
    id: str = Field(min_length=1)
    name: str | None = None
    desk: str = "default"
    strategy: str = "default"
    risk_class: str = "standard"
    wallet_balance: float
    margin_mode: Literal["cross", "isolated"] = "cross"
    positions: list[Position] = Field(default_factory=list)
    open_orders: list[OpenOrder] = Field(default_factory=list)

    @field_validator("wallet_balance")
    @classmethod
    def _wallet_finite(cls, v: float) -> float:
        return _finite(v, "wallet_balance")

    @model_validator(mode="after")
    def _isolated_margins(self) -> Account:
        if self.margin_mode == "isolated":
            for n, p in enumerate(self.positions):
                if p.isolated_margin is None:
                    raise ValueError(f"position {n} ({p.symbol}) needs isolated_margin in an isolated-mode account")
        return self


def check_price(symbol: str, price: float) -> float:
    """A mark price must be a positive finite number; anything else is refused."""
    try:
        value = float(price)
    except (TypeError, ValueError):
        raise InputError(f"price for {symbol}: not a number ({price!r})") from None
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"price for {symbol}: must be positive and finite, got {price!r}")
    return value
