"""Figures over time: ratio-history downsampling, drawdown, and the projected ratio.

Times are seconds (any epoch); projections are reported in hours. Histories of many accounts
are 2-D arrays, one row per account, one column per sample (oldest first).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from engine.analytics.inputs import position_units
from engine.book import Book


@dataclass(frozen=True)
class Downsampled:
    """Per time bucket: the last sample's time and value, and the bucket's lowest and highest values."""

    time: np.ndarray
    last: np.ndarray
    low: np.ndarray
    high: np.ndarray


def downsample(times: np.ndarray, values: np.ndarray, max_points: int) -> Downsampled:
    """Reduce a (time-sorted) history to at most `max_points` buckets of equal time width.

    Keeping each bucket's low and high as well as its last value means a dip (the ratio
    touching a threshold between samples kept) is never lost from a chart. Empty buckets are
    dropped. Histories with at most `max_points` samples come back sample by sample.
    """
    t = np.asarray(times, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if t.shape != v.shape or t.ndim != 1:
        raise ValueError("times and values must be 1-D arrays of one length")
    if max_points < 1:
        raise ValueError(f"max_points must be at least 1, got {max_points!r}")
    if t.size <= max_points:
        return Downsampled(t.copy(), v.copy(), v.copy(), v.copy())
    span = t[-1] - t[0]
    if span > 0:
        bucket = np.minimum(((t - t[0]) / span * max_points).astype(np.int64), max_points - 1)
    else:
        bucket = np.zeros(t.size, dtype=np.int64)  # every sample at one time: one bucket
    starts = np.flatnonzero(np.concatenate([[True], np.diff(bucket) != 0]))
    ends = np.append(starts[1:], t.size) - 1
    return Downsampled(t[ends], v[ends], np.fmin.reduceat(v, starts), np.fmax.reduceat(v, starts))


def drawdown(equity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(current, maximum) drawdown from the running equity peak, as fractions, along the last axis.

    drawdown_t = 1 - equity_t / max(equity_0..t), 0 while that peak is not positive.
    Example: 100, 120, 90, 110 -> drawdowns 0, 0, 0.25, 0.0833; current 0.0833, max 0.25.
    """
    e = np.asarray(equity, dtype=np.float64)
    if e.shape[-1] == 0:
        zero = np.zeros(e.shape[:-1])
        return zero, zero
    peak = np.maximum.accumulate(e, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, 1.0 - e / peak, 0.0)
    return dd[..., -1], dd.max(axis=-1)


def funding_drain(book: Book, funding_rate: np.ndarray, interval_hours: float = 8.0) -> np.ndarray:
    """Expected funding paid per hour per account (quote currency; negative = received).

    Per position: qty * contract_size * mark * rate / interval (a long pays a positive rate).
    `funding_rate` is per instrument, per funding interval (fraction).
    """
    rate = np.asarray(funding_rate, dtype=np.float64)[book.pos_instrument]
    paid = position_units(book) * book.mark[book.pos_instrument] * rate / interval_hours
    return np.bincount(book.pos_account, weights=paid, minlength=book.n_accounts)


@dataclass(frozen=True)
class RatioProjection:
    """Per account: the ratio now, its trend and the funding drain (ratio units per hour),
    the ratio at the horizon, and hours until each threshold (NaN: never at this rate;
    0: already at or below it)."""

    ratio_now: np.ndarray
    trend_per_hour: np.ndarray
    funding_per_hour: np.ndarray
    projected: np.ndarray
    hours_to: dict[str, np.ndarray]

    def hours_to_threshold(self, account: int = 0) -> dict[str, float | None]:
        """One account's hours to each threshold, None for never."""
        return {k: (float(v[account]) if np.isfinite(v[account]) else None) for k, v in self.hours_to.items()}


def project_ratio(
    times: np.ndarray,
    ratios: np.ndarray,
    maintenance_margin: np.ndarray,
    funding_per_hour: np.ndarray | float = 0.0,
    horizon_hours: float = 24.0,
    thresholds: Mapping[str, np.ndarray | float] | None = None,
) -> RatioProjection:
    """Extrapolate each account's ratio linearly: "at this rate the account reaches 1.5 in 31 h".

    rate = least-squares slope of the recent ratio history (per hour; `times` in seconds,
    `ratios` accounts x samples) - funding paid per hour / maintenance margin (the drain in
    ratio units, the maintenance margin held fixed). Pass funding 0 when the history already
    carries the funding payments. projected = ratio now (last sample) + rate * horizon;
    hours to threshold x = (x - ratio now) / rate when the rate is negative and the ratio above x.
    `thresholds` default to the seed warning / critical / liquidation (2.0, 1.5, 1.2).
    """
    t = np.asarray(times, dtype=np.float64) / 3600.0
    r = np.atleast_2d(np.asarray(ratios, dtype=np.float64))
    if r.shape[-1] != t.size:
        raise ValueError("ratios need one column per time")
    if t.size >= 2:
        dt = t - t.mean()
        denom = float(dt @ dt)
        trend = (r - r.mean(axis=1, keepdims=True)) @ dt / denom if denom > 0 else np.zeros(r.shape[0])
    else:
        trend = np.zeros(r.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        mm = np.asarray(maintenance_margin, dtype=np.float64)
        drain = np.where(mm > 0, np.asarray(funding_per_hour, dtype=np.float64) / mm, 0.0)
    now = r[:, -1]
    rate = trend - drain
    thresholds = thresholds if thresholds is not None else {"warning": 2.0, "critical": 1.5, "liquidation": 1.2}
    hours: dict[str, np.ndarray] = {}
    for name, level in thresholds.items():  # per threshold, vectorised over accounts
        with np.errstate(divide="ignore", invalid="ignore"):
            reach = np.where(rate < 0, (np.asarray(level) - now) / rate, np.nan)
        hours[name] = np.where(now <= level, 0.0, reach)
    return RatioProjection(now, trend, drain, now + rate * horizon_hours, hours)
