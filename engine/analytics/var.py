"""Value at risk and expected shortfall of linear portfolios: parametric, historical, Monte Carlo.

Every function takes an exposure matrix E (m portfolios x n instruments, signed notional at
mark in quote currency: an account per row, or the whole book as one row) and returns VaR and
ES per row as positive losses in quote currency (a portfolio that can only gain has VaR <= 0).
The PnL of a row for instrument returns r is E @ r (linear contracts, simple returns).

Horizon: inputs are daily. Parametric and Monte Carlo scale the daily covariance to h days
(variance * h, i.e. sigma * sqrt(h), returns independent with zero mean); historical VaR scales
the 1-day empirical figures by sqrt(h). Confidence is a fraction (0.99 = 99%).

A row holding an instrument whose inputs are unknown (NaN volatility or history) or that is
unpriced gets NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.analytics.inputs import unknown_rows
from engine.analytics.stats import correlated_draws, covariance_factor, normal_pdf, normal_ppf, tail_var_es

# Monte Carlo PnL is computed for blocks of rows so paths x rows stays below this many numbers.
_MC_BLOCK = 4_000_000


@dataclass(frozen=True)
class RiskFigures:
    """VaR and expected shortfall per portfolio (positive losses, quote currency)."""

    var: np.ndarray
    es: np.ndarray


def _check(confidence: float, horizon_days: float) -> None:
    if not (0.5 < confidence < 1.0):
        raise ValueError(f"confidence must lie in (0.5, 1), got {confidence!r}")
    if not (math.isfinite(horizon_days) and horizon_days > 0):
        raise ValueError(f"horizon_days must be a positive finite number, got {horizon_days!r}")


def _clean(exposure: np.ndarray, unknown_cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exposure with unusable columns and rows zeroed (NaN * 0 would poison a matmul), and the bad rows."""
    e = np.atleast_2d(np.asarray(exposure, dtype=np.float64))
    bad = unknown_rows(e, unknown_cols)
    e = np.where(unknown_cols[None, :] | bad[:, None] | np.isnan(e), 0.0, e)
    return e, bad


def parametric_var(exposure: np.ndarray, cov: np.ndarray, confidence: float, horizon_days: float = 1.0) -> RiskFigures:
    """Variance-covariance VaR and ES of normal, zero-mean returns.

    sigma = sqrt(e' C e) for the daily covariance C; VaR = z * sigma * sqrt(h) and
    ES = sigma * pdf(z) / (1 - confidence) * sqrt(h), z = N^-1(confidence).
    Example: one position of 100,000 notional, daily vol 2%, 99%, 1 day:
    sigma = 2,000, z = 2.3263, VaR = 4,652.7, ES = 2,000 * 0.026652 / 0.01 = 5,330.4.
    """
    _check(confidence, horizon_days)
    cov = np.asarray(cov, dtype=np.float64)
    unknown = ~np.isfinite(np.diag(cov))
    e, bad = _clean(exposure, unknown)
    c = np.where(np.isfinite(cov), cov, 0.0)
    variance = np.einsum("ij,ij->i", e @ c, e)
    sigma = np.sqrt(np.maximum(variance, 0.0) * horizon_days)
    z = float(normal_ppf(confidence))
    var = z * sigma
    es = sigma * float(normal_pdf(z)) / (1.0 - confidence)
    return RiskFigures(np.where(bad, np.nan, var), np.where(bad, np.nan, es))


def historical_var(
    exposure: np.ndarray, returns: np.ndarray, confidence: float, horizon_days: float = 1.0
) -> RiskFigures:
    """Historical-simulation VaR and ES from a window of daily returns (T x n, oldest first).

    Each day's PnL is today's exposure times that day's returns, loss = -PnL. VaR is the
    inverted-CDF empirical quantile of the T losses (k = ceil(T * confidence), the k-th
    smallest, see stats.tail_var_es) and ES the mean of the T - k + 1 largest; both scaled by
    sqrt(h). Example: T = 250, 99%: k = 248, VaR is the 3rd-largest loss, ES the mean of the
    3 largest.
    """
    _check(confidence, horizon_days)
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] == 0:
        n = np.atleast_2d(exposure).shape[0]
        return RiskFigures(np.full(n, np.nan), np.full(n, np.nan))
    unknown = ~np.isfinite(r).all(axis=0)
    e, bad = _clean(exposure, unknown)
    losses = -(np.where(unknown[None, :], 0.0, r) @ e.T)  # T x m
    var, es = tail_var_es(losses, confidence, axis=0)
    scale = math.sqrt(horizon_days)
    return RiskFigures(np.where(bad, np.nan, var * scale), np.where(bad, np.nan, es * scale))


def simulate_returns(
    cov: np.ndarray,
    paths: int,
    seed: int,
    horizon_days: float = 1.0,
    distribution: str = "normal",
    degrees_of_freedom: float = 5.0,
) -> np.ndarray:
    """paths x n horizon returns with covariance cov * h (normal, or Student-t with that covariance).

    Seeded (numpy PCG64): the same seed gives the same paths. Columns with unknown (NaN)
    variance are simulated as 0.
    """
    c = np.asarray(cov, dtype=np.float64)
    c = np.where(np.isfinite(c), c, 0.0) * horizon_days
    rng = np.random.default_rng(seed)
    return correlated_draws(covariance_factor(c), int(paths), rng, distribution, degrees_of_freedom)


def monte_carlo_var(
    exposure: np.ndarray,
    cov: np.ndarray,
    confidence: float,
    horizon_days: float = 1.0,
    paths: int = 10_000,
    seed: int = 1,
    distribution: str = "normal",
    degrees_of_freedom: float = 5.0,
) -> RiskFigures:
    """Monte Carlo VaR and ES: `paths` correlated horizon returns (see simulate_returns, sqrt-of-time
    on the covariance), PnL = e @ r per path, then the empirical VaR / ES of the simulated
    losses (same quantile convention as historical_var). Every row sees the same paths.
    """
    _check(confidence, horizon_days)
    if paths < 1:
        raise ValueError(f"paths must be at least 1, got {paths!r}")
    cov = np.asarray(cov, dtype=np.float64)
    unknown = ~np.isfinite(np.diag(cov))
    e, bad = _clean(exposure, unknown)
    sims = simulate_returns(cov, paths, seed, horizon_days, distribution, degrees_of_freedom)
    m = e.shape[0]
    var = np.empty(m)
    es = np.empty(m)
    block = max(1, _MC_BLOCK // max(int(paths), 1))
    for lo in range(0, m, block):  # blocks of rows keep paths x rows bounded
        losses = -(sims @ e[lo : lo + block].T)
        var[lo : lo + block], es[lo : lo + block] = tail_var_es(losses, confidence, axis=0)
    return RiskFigures(np.where(bad, np.nan, var), np.where(bad, np.nan, es))
