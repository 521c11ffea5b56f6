"""Market inputs of the analytics: price histories, daily returns and volatilities, correlation
matrices, and the book's exposures.

Conventions: returns are simple daily returns r_t = P_t / P_(t-1) - 1 (a linear contract's PnL
is exactly units * P_(t-1) * r_t); volatilities are daily, as fractions; variances and
covariances are zero-mean (sum r_i r_j / T), as in engine.thresholds.realised_volatility;
exposure is signed notional at mark (qty * contract_size * mark, quote currency).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from engine.book import Book
from engine.model import Instrument

DAYS_PER_YEAR = 365.0  # crypto trades every day; engine.thresholds uses a 365-day year too


def align_closes(history: Mapping[str, Sequence[float]], symbols: Sequence[str]) -> np.ndarray:
    """T x n daily closes (oldest first), aligned on the most recent close, one column per symbol.

    The window is the longest every symbol with at least two closes covers (T = the shortest
    such history); symbols with fewer than two closes get a NaN column. T is 0 when no symbol
    has two closes.
    """
    lengths = [len(history.get(s, ())) for s in symbols]
    usable = [n for n in lengths if n >= 2]
    t = min(usable) if usable else 0
    out = np.full((t, len(symbols)), np.nan)
    for j, (s, n) in enumerate(zip(symbols, lengths, strict=True)):
        if n >= 2 and t:
            out[:, j] = np.asarray(history[s], dtype=np.float64)[n - t :]
    return out


def simple_returns(closes: np.ndarray) -> np.ndarray:
    """(T - 1) x n simple returns of T x n closes; NaN where a close is missing or not positive."""
    p = np.asarray(closes, dtype=np.float64)
    p = np.where(p > 0, p, np.nan)
    return p[1:] / p[:-1] - 1.0


def daily_volatility(returns: np.ndarray) -> np.ndarray:
    """Zero-mean daily volatility per column, sqrt(mean(r^2)); NaN for a column with a NaN or no rows."""
    r = np.asarray(returns, dtype=np.float64)
    if r.shape[0] == 0:
        return np.full(r.shape[1], np.nan)
    return np.sqrt(np.mean(r * r, axis=0))


def return_correlation(returns: np.ndarray) -> np.ndarray:
    """Zero-mean correlation matrix of the return columns (sum r_i r_j / sqrt(sum r_i^2 sum r_j^2)).

    A column without variance (flat or missing) is uncorrelated with the others (diagonal 1).
    """
    r = np.asarray(returns, dtype=np.float64)
    ok = np.isfinite(r).all(axis=0) & (r.shape[0] > 0)
    r = np.where(ok, r, 0.0)
    g = r.T @ r
    d = np.sqrt(np.diag(g))
    with np.errstate(divide="ignore", invalid="ignore"):
        c = g / np.outer(d, d)
    c = np.where(np.isfinite(c), c, 0.0)
    np.fill_diagonal(c, 1.0)
    return np.clip(c, -1.0, 1.0)


def correlation_from_groups(
    instruments: Sequence[Instrument],
    same_underlying: float = 0.95,
    same_group: float = 0.85,
    other: float = 0.5,
) -> np.ndarray:
    """n x n correlation: 1 on the diagonal, `same_underlying` between instruments of one
    underlying, `same_group` within a group, `other` elsewhere.

    Requires 0 <= other <= same_group <= same_underlying <= 1: the matrix is then
    (1 - su) I + (su - sg) B_underlying + (sg - o) B_group + o J, a sum of positive
    semi-definite terms, so it is a valid correlation matrix. The defaults match the simulator
    (group 0.85, market 0.5).
    """
    if not (0.0 <= other <= same_group <= same_underlying <= 1.0):
        raise ValueError(
            "correlations must satisfy 0 <= other <= same_group <= same_underlying <= 1, got "
            f"other={other}, same_group={same_group}, same_underlying={same_underlying}"
        )
    und = np.array([i.underlying for i in instruments], dtype=object)
    grp = np.array([i.group for i in instruments], dtype=object)
    c = np.full((len(instruments), len(instruments)), other)
    c[grp[:, None] == grp[None, :]] = same_group
    c[und[:, None] == und[None, :]] = same_underlying
    np.fill_diagonal(c, 1.0)
    return c


def covariance(daily_vol: np.ndarray, correlation: np.ndarray) -> np.ndarray:
    """Daily covariance D C D of simple returns (D = diag(daily_vol))."""
    v = np.asarray(daily_vol, dtype=np.float64)
    return correlation * np.outer(v, v)


def annualised(daily_vol: np.ndarray) -> np.ndarray:
    """Daily volatility scaled to a year by sqrt(365) (square root of time)."""
    return np.asarray(daily_vol, dtype=np.float64) * math.sqrt(DAYS_PER_YEAR)


def position_units(book: Book) -> np.ndarray:
    """Signed size of each position in underlying units (qty * contract_size)."""
    return book.pos_qty * book.contract_size[book.pos_instrument]


def exposure_matrix(
    pos_account: np.ndarray, pos_instrument: np.ndarray, exposure: np.ndarray, n_accounts: int, n_instruments: int
) -> np.ndarray:
    """n_accounts x n_instruments sums of per-position values (positions on one instrument net)."""
    key = np.asarray(pos_account, dtype=np.int64) * n_instruments + np.asarray(pos_instrument, dtype=np.int64)
    flat = np.bincount(key, weights=exposure, minlength=n_accounts * n_instruments)
    return flat.reshape(n_accounts, n_instruments)


def account_exposures(book: Book) -> np.ndarray:
    """Signed notional at mark per account and instrument (n_accounts x n_instruments, quote currency).

    NaN where an account holds an unpriced instrument.
    """
    signed = position_units(book) * book.mark[book.pos_instrument]
    return exposure_matrix(book.pos_account, book.pos_instrument, signed, book.n_accounts, len(book.instruments))


def book_exposure(book: Book) -> np.ndarray:
    """Net signed notional of the whole book per instrument, as one row (1 x n_instruments)."""
    return account_exposures(book).sum(axis=0, keepdims=True)


def unknown_rows(exposure: np.ndarray, unknown_columns: np.ndarray) -> np.ndarray:
    """Rows that hold (non-zero or NaN exposure in) a column whose inputs are unknown, or an unpriced one."""
    e = np.asarray(exposure, dtype=np.float64)
    held = (e != 0) | np.isnan(e)
    return (held & np.asarray(unknown_columns, dtype=bool)[None, :]).any(axis=1) | np.isnan(e).any(axis=1)
