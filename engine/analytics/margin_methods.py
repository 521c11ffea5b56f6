"""Initial-margin methods, selectable per instrument group or per account.

- position  (default): the venue's brackets, notional / max_leverage per position, as the book has it;
- risk:      notional * k * daily_vol * sqrt(h) per position;
- portfolio: per account and instrument group, the stand-alone (bracket) margins of the
             positions, signed by side and netted per instrument into m_i, are offset by
             correlation: sqrt(m' C m), summed over groups (no offset across groups), never
             above sum |m_i|;
- scenario:  SPAN-style scanning risk (engine.analytics.span).

An account listed in `accounts` uses that method for all its positions; otherwise each position
uses the method of its instrument's group (`groups`), else `default`. An account's requirement
is the sum over the methods of the requirement of the positions each one margins. With the
defaults every position is margined by its brackets: the venue's numbers, unchanged.
Amounts are in quote currency; NaN where an input (price, volatility, scan range, max leverage)
is missing for a position that needs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.analytics.inputs import correlation_from_groups, exposure_matrix, position_units
from engine.analytics.span import ScanBy, scan_ranges, scenario_margin
from engine.book import Book


class MarginMethod(StrEnum):
    POSITION = "position"
    RISK = "risk"
    PORTFOLIO = "portfolio"
    SCENARIO = "scenario"


_METHODS = tuple(MarginMethod)


class MarginMethods(BaseModel):
    """Which method margins what, and the methods' parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: MarginMethod = MarginMethod.POSITION
    groups: dict[str, MarginMethod] = Field(default_factory=dict)  # instrument group -> method
    accounts: dict[str, MarginMethod] = Field(default_factory=dict)  # account id -> method (wins)
    risk_multiplier: float = Field(default=3.0, gt=0)  # k of the risk-based method
    horizon_days: float = Field(default=1.0, gt=0)  # risk-based and default scan ranges
    same_underlying_correlation: float = Field(default=0.95, ge=0, le=1)
    same_group_correlation: float = Field(default=0.85, ge=0, le=1)
    scan_confidence: float = Field(default=0.99, gt=0.5, lt=1)  # default scan range: z * daily vol
    extreme_multiple: float = Field(default=3.0, gt=0)
    extreme_coverage: float = Field(default=0.3, ge=0, le=1)
    scan_by: ScanBy = "underlying"

    @model_validator(mode="after")
    def _correlations_ordered(self) -> MarginMethods:
        if self.same_group_correlation > self.same_underlying_correlation:
            raise ValueError("same_group_correlation must not exceed same_underlying_correlation")
        return self


@dataclass(frozen=True)
class InitialMargin:
    """Requirement per account (quote currency), its split by method, and each position's method."""

    total: np.ndarray
    by_method: dict[str, np.ndarray] = field(default_factory=dict)
    position_method: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))


def risk_based_margin(
    notional: np.ndarray, daily_vol: np.ndarray, multiplier: float = 3.0, horizon_days: float = 1.0
) -> np.ndarray:
    """notional * k * sigma * sqrt(h). Example: 100,000 notional, k 3, sigma 2%, 4 days: 12,000."""
    return np.abs(notional) * multiplier * np.asarray(daily_vol, dtype=np.float64) * math.sqrt(horizon_days)


def portfolio_margin(
    signed_margin: np.ndarray, correlation: np.ndarray, blocks: np.ndarray | None = None
) -> np.ndarray:
    """Correlation-offset margin per row of signed stand-alone margins (m rows x n instruments).

    Per block b of instruments (None: one block), sqrt(m_b' C_bb m_b), summed over blocks, capped
    at sum |m| (it cannot exceed it anyway when |C| <= 1: m'Cm <= (sum |m_i|)^2).
    Example: +1,000 and -1,000 on one underlying with correlation 0.95:
    sqrt(1e6 + 1e6 - 2 * 0.95 * 1e6) = 316.2, against 2,000 stand-alone.
    """
    s = np.atleast_2d(np.asarray(signed_margin, dtype=np.float64))
    c = np.asarray(correlation, dtype=np.float64)
    codes = np.zeros(s.shape[1], dtype=np.int64) if blocks is None else np.asarray(blocks)
    total = np.zeros(s.shape[0])
    for b in np.unique(codes):  # one quadratic form per block (instrument group)
        cols = np.flatnonzero(codes == b)
        mb = s[:, cols]
        q = np.einsum("ij,ij->i", mb @ c[np.ix_(cols, cols)], mb)
        total += np.sqrt(np.maximum(q, 0.0))
    return np.minimum(total, np.abs(s).sum(axis=1))


def position_methods(book: Book, methods: MarginMethods) -> np.ndarray:
    """Index into MarginMethod (0 position, 1 risk, 2 portfolio, 3 scenario) of each position."""
    code = {m: n for n, m in enumerate(_METHODS)}
    inst = np.array([code[methods.groups.get(i.group or "", methods.default)] for i in book.instruments], np.int64)
    acct = np.full(book.n_accounts, -1, dtype=np.int64)
    for account_id, m in methods.accounts.items():
        if account_id in book.account_index:
            acct[book.account_index[account_id]] = code[m]
    by_account = acct[book.pos_account]
    return np.where(by_account >= 0, by_account, inst[book.pos_instrument])


def initial_margin(
    book: Book,
    methods: MarginMethods | None = None,
    daily_vol: np.ndarray | None = None,
    scan_range: np.ndarray | None = None,
) -> InitialMargin:
    """Initial margin per account under `methods` (defaults: the brackets, as the venue).

    `daily_vol` (per instrument, fraction) feeds the risk-based method and the default scan
    ranges (scan_ranges with `scan_confidence` and `horizon_days`); `scan_range` (per instrument,
    absolute price move per unit, NaN = derive) overrides them.
    """
    methods = methods or MarginMethods()
    n_inst = len(book.instruments)
    vol = np.full(n_inst, np.nan) if daily_vol is None else np.asarray(daily_vol, dtype=np.float64)
    which = position_methods(book, methods)
    by_method: dict[str, np.ndarray] = {}
    im = book.initial_margin
    for n, method in enumerate(_METHODS):  # per method, vectorised over its positions
        mask = which == n
        if not mask.any():
            continue
        if method is MarginMethod.POSITION:
            amount = np.bincount(book.pos_account[mask], weights=im[mask], minlength=book.n_accounts)
        elif method is MarginMethod.RISK:
            per_pos = risk_based_margin(
                book.notional[mask], vol[book.pos_instrument[mask]], methods.risk_multiplier, methods.horizon_days
            )
            amount = np.bincount(book.pos_account[mask], weights=per_pos, minlength=book.n_accounts)
        elif method is MarginMethod.PORTFOLIO:
            signed = np.where(mask, np.sign(position_units(book)) * im, 0.0)
            per_inst = exposure_matrix(book.pos_account, book.pos_instrument, signed, book.n_accounts, n_inst)
            corr = correlation_from_groups(
                book.instruments, methods.same_underlying_correlation, methods.same_group_correlation, 0.0
            )
            _, groups = np.unique(np.array([str(i.group) for i in book.instruments]), return_inverse=True)
            amount = portfolio_margin(per_inst, corr, groups)
        else:
            ranges = scan_ranges(book.mark, vol, methods.scan_confidence, methods.horizon_days)
            if scan_range is not None:
                given = np.asarray(scan_range, dtype=np.float64)
                ranges = np.where(np.isfinite(given), given, ranges)
            amount = scenario_margin(
                book, ranges, methods.extreme_multiple, methods.extreme_coverage, methods.scan_by, positions=mask
            ).requirement
        by_method[method.value] = amount
    total = np.sum(list(by_method.values()), axis=0) if by_method else np.zeros(book.n_accounts)
    names = np.array([m.value for m in _METHODS], dtype=object)
    return InitialMargin(total, by_method, names[which])
