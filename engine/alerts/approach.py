"""Which accounts are approaching their next, more severe level (vectorised, no I/O).

An account is approaching when its margin ratio is still above the next more severe
threshold of its current level (SAFE -> warning, WARNING -> critical, CRITICAL ->
liquidation) and either

- within `band` ratio units of it (0 < ratio - threshold <= band), or
- its trend, projected `horizon_s` seconds ahead, reaches it
  (ratio + slope * horizon_s <= threshold, with slope < 0 in ratio units per second).

LIQUIDATION has nothing further to approach. NaN ratios, thresholds or slopes never match.
"""

from __future__ import annotations

import numpy as np


def next_threshold(
    level: np.ndarray, warning: np.ndarray | float, critical: np.ndarray | float, liquidation: np.ndarray | float
) -> np.ndarray:
    """The next more severe threshold for each account's level (NaN at LIQUIDATION)."""
    level = np.asarray(level)
    shape = level.shape
    choices = [
        np.broadcast_to(np.asarray(warning, dtype=float), shape),
        np.broadcast_to(np.asarray(critical, dtype=float), shape),
        np.broadcast_to(np.asarray(liquidation, dtype=float), shape),
        np.full(shape, np.nan),
    ]
    return np.choose(np.clip(level.astype(np.int64), 0, 3), choices)


def approaching(
    ratio: np.ndarray,
    level: np.ndarray,
    warning: np.ndarray | float,
    critical: np.ndarray | float,
    liquidation: np.ndarray | float,
    ratio_history_slope: np.ndarray | float,
    band: float,
    horizon_s: float,
) -> np.ndarray:
    """Boolean mask of the accounts approaching their next more severe threshold."""
    ratio = np.asarray(ratio, dtype=float)
    nxt = next_threshold(np.asarray(level), warning, critical, liquidation)
    slope = np.broadcast_to(np.asarray(ratio_history_slope, dtype=float), ratio.shape)
    with np.errstate(invalid="ignore"):
        gap = ratio - nxt
        above = gap > 0  # on the threshold already belongs to the more severe level
        near = gap <= band
        falling = slope < 0
        projected = ratio + slope * horizon_s <= nxt
    return above & (near | (falling & projected))


def ratio_slope(times: np.ndarray, ratios: np.ndarray) -> np.ndarray:
    """Least-squares slope (ratio units per second) of each row of a (accounts, samples) window.

    Missing samples are NaN (in either array); a row with fewer than two samples gives NaN.
    """
    t = np.asarray(times, dtype=float)
    r = np.asarray(ratios, dtype=float)
    ok = np.isfinite(t) & np.isfinite(r)
    n = ok.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        t0 = np.where(ok, t, 0.0)
        r0 = np.where(ok, r, 0.0)
        tm = t0.sum(axis=-1) / n
        rm = r0.sum(axis=-1) / n
        dt = np.where(ok, t - tm[..., None], 0.0)
        dr = np.where(ok, r - rm[..., None], 0.0)
        var = (dt * dt).sum(axis=-1)
        slope = (dt * dr).sum(axis=-1) / var
    return np.where((n >= 2) & (var > 0), slope, np.nan)
