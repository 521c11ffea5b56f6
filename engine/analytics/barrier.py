"""Probability of a mark touching a barrier (the liquidation price, or the price at which the
account's ratio reaches its LIQUIDATION threshold) within a horizon.

The mark follows geometric Brownian motion; x = ln(S_t / S_0) is a Brownian motion with drift
nu (per day; nu = mu - sigma^2 / 2, default 0) and volatility sigma (daily). With
b = ln(B / S_0), the first-passage probability within T days (reflection principle) is

    down barrier (b < 0):  N((b - nu T) / (sigma sqrt T)) + exp(2 nu b / sigma^2) N((b + nu T) / (sigma sqrt T))
    up barrier (b > 0):    N((-b + nu T) / (sigma sqrt T)) + exp(2 nu b / sigma^2) N((-b - nu T) / (sigma sqrt T))

which for nu = 0 is 2 N(-|ln(B / S_0)| / (sigma sqrt T)). Monitoring is continuous, so it is at
least the probability of ending beyond the barrier.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from engine import margin
from engine.analytics.stats import normal_cdf
from engine.book import Book


def touch_probability(
    spot: np.ndarray | float,
    barrier: np.ndarray | float,
    daily_vol: np.ndarray | float,
    horizon_days: float,
    drift: np.ndarray | float = 0.0,
    direction: np.ndarray | float | None = None,
) -> np.ndarray:
    """P(the price touches `barrier` within `horizon_days`), see the module docstring.

    `direction` says which way the barrier is approached: -1 from above (a long's liquidation
    price, touched by a fall), +1 from below; None takes the side the barrier is on. 1 where the
    barrier is at or already past the spot in that direction; 0 where there is no barrier (NaN)
    or zero volatility; NaN where the volatility is unknown.
    Example: spot 100, barrier 90, 3% daily, 4 days: 2 N(-0.10536 / 0.06) = 2 N(-1.7560) = 0.0791.
    """
    s = np.asarray(spot, dtype=np.float64)
    bar = np.asarray(barrier, dtype=np.float64)
    sig = np.asarray(daily_vol, dtype=np.float64)
    nu = np.asarray(drift, dtype=np.float64)
    if not (math.isfinite(horizon_days) and horizon_days >= 0):
        raise ValueError(f"horizon_days must be a finite number >= 0, got {horizon_days!r}")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        b = np.log(bar / s)
        sd = sig * math.sqrt(horizon_days)
        nt = nu * horizon_days
        down = b < 0
        sb = np.where(down, b, -b)  # -|b|
        sn = np.where(down, nt, -nt)  # drift toward the barrier counts against
        p = normal_cdf((sb - sn) / sd) + np.exp(2.0 * nu * b / (sig * sig)) * normal_cdf((sb + sn) / sd)
        p = np.where(np.isfinite(p), p, np.where(sb < 0, 0.0, 1.0))  # sd = 0: no move
    p = np.clip(p, 0.0, 1.0)
    passed = b == 0 if direction is None else np.asarray(direction) * b <= 0
    p = np.where(np.isnan(bar), 0.0, np.where(passed, 1.0, p))
    return np.where(np.isnan(sig) & ~np.isnan(bar), np.nan, p)


def threshold_prices(book: Book, ratio: np.ndarray | float, positions: np.ndarray | None = None) -> np.ndarray:
    """Mark price per position at which its account's ratio falls to `ratio` (per account or one
    number), the other positions held at their marks; NaN where none exists. With `positions`,
    only those are solved, in that order (e.g. one account's, for its detail).

    Equity = ratio * MM is equity = MM with every bracket's rate and amount scaled by the ratio,
    so this is engine.margin.liquidation_prices on a scaled bracket table (ratio 1: the
    liquidation price). The search needs ratio * mmr < 1 in every tier.
    """
    target = np.broadcast_to(np.asarray(ratio, dtype=np.float64), (book.n_accounts,))
    pos = np.arange(book.pos_qty.size) if positions is None else np.asarray(positions, dtype=np.int64)
    acct = book.pos_account[pos]
    other_upnl = book.acct_upnl[acct] - book.unrealized_pnl[pos]
    collateral = book.wallet[acct].copy()
    out = np.full(pos.size, np.nan)
    iso = book.isolated[acct]
    collateral[iso] = book.pos_isolated_margin[pos[iso]]
    other_upnl[iso] = 0.0
    pos_target = target[acct]
    for theta in np.unique(pos_target[np.isfinite(pos_target)]):  # one scaled table per distinct ratio
        sel = np.flatnonzero(pos_target == theta)
        p = pos[sel]
        table = dataclasses.replace(book.table, mmr=book.table.mmr * theta, cum=book.table.cum * theta)
        other_mm = np.where(iso[sel], 0.0, theta * (book.acct_mm[acct[sel]] - book.maintenance_margin[p]))
        out[sel] = margin.liquidation_prices(
            book.pos_qty[p],
            book.pos_entry[p],
            book.contract_size[book.pos_instrument[p]],
            book.pos_bracket[p],
            collateral[sel],
            other_mm,
            other_upnl[sel],
            table,
        )
    return out


def _position_touch(
    book: Book, positions: np.ndarray | None, daily_vol: np.ndarray, horizon_days: float, threshold: str, drift: float
) -> np.ndarray:
    """Touch probability per position (all, or `positions` in that order); 0 where flat."""
    if threshold == "venue":
        prices = book.liquidation_prices(positions)
    elif threshold == "liquidation":
        prices = threshold_prices(book, book.liquidation, positions)
    else:
        raise ValueError(f"threshold must be 'venue' or 'liquidation', got {threshold!r}")
    qty = book.pos_qty if positions is None else book.pos_qty[positions]
    inst = book.pos_instrument if positions is None else book.pos_instrument[positions]
    vol = np.asarray(daily_vol, dtype=np.float64)[inst]
    direction = -np.sign(qty)  # a long is liquidated by a fall (contract sizes are positive)
    p = touch_probability(book.mark[inst], prices, vol, horizon_days, drift, direction)
    return np.where(qty == 0, 0.0, p)


def liquidation_touch_probability(
    book: Book, daily_vol: np.ndarray, horizon_days: float, threshold: str = "venue", drift: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """(per position, per account) probability of touching within the horizon: the liquidation
    price (`threshold="venue"`, ratio 1.0) or the account's LIQUIDATION threshold
    (`threshold="liquidation"`).

    Each position is taken alone, the others held at their marks; the account figure is the
    largest over its positions (a lower bound for "any position gets there": the positions'
    prices are correlated and the exact joint figure needs a simulation). 0 for an account that
    holds nothing; NaN where a position with a barrier has no volatility.
    """
    p = _position_touch(book, None, daily_vol, horizon_days, threshold, drift)
    per_account = np.zeros(book.n_accounts)
    nonempty = np.flatnonzero(book.acct_pos_count > 0)
    if nonempty.size:
        per_account[nonempty] = np.maximum.reduceat(p, book.acct_pos_start[nonempty])  # NaN propagates
    return p, per_account


def account_touch_probability(
    book: Book, account: int, daily_vol: np.ndarray, horizon_days: float, threshold: str = "venue", drift: float = 0.0
) -> float:
    """liquidation_touch_probability's per-account figure for one account, solving only its
    positions (what a detail view needs; equal to the whole-book figure, a test holds them)."""
    pos = book.account_positions(account)
    if pos.size == 0:
        return 0.0
    return float(np.max(_position_touch(book, pos, daily_vol, horizon_days, threshold, drift)))  # NaN propagates
