"""The analytics block of `capguard eval` (docs/analytics.md): per account and for the book.

Inputs per instrument: daily volatility (NaN: estimate from the history), price scan range (NaN:
derive from the volatility); per symbol a history of daily closes; the request's confidence,
horizon, Monte Carlo and SPAN parameters. Figures whose inputs are missing are None (null).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from engine.analytics.barrier import liquidation_touch_probability
from engine.analytics.history import drawdown
from engine.analytics.inputs import (
    account_exposures,
    align_closes,
    correlation_from_groups,
    covariance,
    daily_volatility,
    exposure_matrix,
    position_units,
    return_correlation,
    simple_returns,
    unknown_rows,
)
from engine.analytics.span import ScanBy, scan_ranges, scenario_margin
from engine.analytics.var import historical_var, monte_carlo_var, parametric_var
from engine.book import Book


class AnalyticsRequest(BaseModel):
    """The snapshot's `analytics` object."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    confidence: float = Field(default=0.99, gt=0.5, lt=1)
    horizon_days: float = Field(default=1.0, gt=0, le=365)
    mc_paths: int = Field(default=10_000, ge=100, le=1_000_000)
    seed: int = Field(default=1, ge=0)
    extreme_multiple: float = Field(default=3.0, gt=0)
    extreme_coverage: float = Field(default=0.3, ge=0, le=1)
    distribution: Literal["normal", "student_t"] = "normal"
    degrees_of_freedom: float = Field(default=5.0, gt=2)
    scan_by: ScanBy = "underlying"


@dataclass(frozen=True)
class MarketData:
    """Per instrument: daily volatility, daily covariance, price scan range; T x n daily returns
    and T+1 x n closes of the common window (NaN columns where a symbol has no history)."""

    daily_vol: np.ndarray
    cov: np.ndarray
    scan_range: np.ndarray
    returns: np.ndarray
    closes: np.ndarray


def market_data(
    book: Book,
    daily_vol: np.ndarray,
    scan_range: np.ndarray,
    history: Mapping[str, Sequence[float]],
    request: AnalyticsRequest,
) -> MarketData:
    """Volatility given, else estimated from the history; correlation from the history when
    every held instrument with a volatility has one, else from the instruments' groups
    (inputs.correlation_from_groups); scan range given, else mark * z * vol * sqrt(h)."""
    closes = align_closes(history, [i.symbol for i in book.instruments])
    returns = simple_returns(closes) if closes.shape[0] >= 2 else np.zeros((0, closes.shape[1]))
    vol = np.where(np.isfinite(daily_vol), daily_vol, daily_volatility(returns))
    held = np.zeros(len(book.instruments), dtype=bool)
    held[book.pos_instrument[book.pos_qty != 0]] = True
    need = held & np.isfinite(vol)
    from_history = returns.shape[0] >= 2 and bool(np.isfinite(returns[:, need]).all())
    corr = return_correlation(returns) if from_history else correlation_from_groups(book.instruments)
    derived = scan_ranges(book.mark, vol, request.confidence, request.horizon_days)
    return MarketData(
        vol, covariance(vol, corr), np.where(np.isfinite(scan_range), scan_range, derived), returns, closes
    )


def _num(x: float) -> float | None:
    """JSON has no NaN or infinities: those are null. -0.0 is written as 0.0."""
    x = float(x) + 0.0
    return x if math.isfinite(x) else None


def history_drawdown(book: Book, closes: np.ndarray) -> np.ndarray:
    """Max drawdown per account of the equity its current positions would have had over the
    closes window: wallet + sum units * (close - entry); NaN where a held instrument has no
    history, 0 for an account that holds nothing."""
    n_inst = len(book.instruments)
    units = exposure_matrix(book.pos_account, book.pos_instrument, position_units(book), book.n_accounts, n_inst)
    cost = np.bincount(book.pos_account, weights=position_units(book) * book.pos_entry, minlength=book.n_accounts)
    missing = ~np.isfinite(closes).all(axis=0) if closes.shape[0] else np.ones(n_inst, dtype=bool)
    bad = unknown_rows(units, missing)
    path = (book.wallet - cost)[:, None] + np.where(missing[None, :], 0.0, units) @ np.where(
        missing[None, :], 0.0, closes
    ).T
    _, worst = drawdown(path)
    worst = np.where(bad, np.nan, worst)
    return np.where(book.acct_pos_count > 0, worst, 0.0)


def analytics(
    book: Book,
    daily_vol: np.ndarray,
    scan_range: np.ndarray,
    history: Mapping[str, Sequence[float]],
    request: AnalyticsRequest,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(one analytics dict per account, the book's dict) for a valued book."""
    m = market_data(book, daily_vol, scan_range, history, request)
    exposure = account_exposures(book)
    rows = np.vstack([exposure, exposure.sum(axis=0, keepdims=True)])  # the accounts, then the whole book
    conf, h = request.confidence, request.horizon_days
    par = parametric_var(rows, m.cov, conf, h)
    hist = historical_var(rows, m.returns, conf, h)
    mc = monte_carlo_var(
        rows, m.cov, conf, h, request.mc_paths, request.seed, request.distribution, request.degrees_of_freedom
    )
    span = scenario_margin(book, m.scan_range, request.extreme_multiple, request.extreme_coverage, request.scan_by)
    dd = history_drawdown(book, m.closes)
    _, touch = liquidation_touch_probability(book, m.daily_vol, h)
    accounts = []
    for a in range(book.n_accounts):
        array = span.risk_array[a]
        accounts.append(
            {
                "var_parametric": _num(par.var[a]),
                "var_historical": _num(hist.var[a]),
                "var_monte_carlo": _num(mc.var[a]),
                "es_historical": _num(hist.es[a]),
                "scenario_margin": _num(span.requirement[a]),
                "risk_array": [float(x) + 0.0 for x in array] if np.isfinite(array).all() else None,
                "max_drawdown": _num(dd[a]),
                "liquidation_probability": _num(touch[a]),
            }
        )
    whole = {
        "var_parametric": _num(par.var[-1]),
        "var_historical": _num(hist.var[-1]),
        "var_monte_carlo": _num(mc.var[-1]),
        "es_historical": _num(hist.es[-1]),
    }
    return accounts, whole
