"""Scenario-based (SPAN-style) margin: a 16-scenario risk array per instrument and account.

Each instrument has a price scan range R (absolute price move per unit of the underlying, quote
currency) and optionally a volatility scan range. The 16 scenarios, in CME order:

    n   price move   volatility      n   price move   volatility
    1   0            up              9   -2/3 R       up
    2   0            down           10   -2/3 R       down
    3   +1/3 R       up             11   +3/3 R       up
    4   +1/3 R       down           12   +3/3 R       down
    5   -1/3 R       up             13   -3/3 R       up
    6   -1/3 R       down           14   -3/3 R       down
    7   +2/3 R       up             15   +X R (extreme)  unchanged, counted at share c
    8   +2/3 R       down           16   -X R (extreme)  unchanged, counted at share c

with X = `extreme_multiple` (CME: 3) and c = `extreme_coverage` (CME: 35%). The array holds
losses (positive = loss): for a long of u units, loss = -u * move. The extreme rows are already
multiplied by c.

Linear futures have no volatility exposure, so the volatility-up and -down legs of a pair have
equal PnL. The volatility dimension is kept (the array stays CME-shaped and an options pricer
can fill it later); the volatility scan range is accepted and unused for PnL.

Scanning risk (the requirement): positions of one combined commodity net (offsetting positions
cancel), its worst scenario loss counts (at least 0), and the combined commodities' figures are
summed, as SPAN does. The combined commodity is the underlying by default; `scan_by="portfolio"`
nets the whole account in one array (every instrument moving the same fraction of its own range
at once, i.e. full offset across underlyings), which equals the maximum of the account's array.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from engine.analytics.stats import normal_ppf
from engine.book import Book
from engine.model import Instrument

ScanBy = Literal["underlying", "group", "portfolio"]

# (price move as a fraction of the scan range, volatility leg: +1 up, -1 down, 0 unchanged)
_REGULAR = ((0.0, 1), (0.0, -1), (1 / 3, 1), (1 / 3, -1), (-1 / 3, 1), (-1 / 3, -1), (2 / 3, 1), (2 / 3, -1),
            (-2 / 3, 1), (-2 / 3, -1), (1.0, 1), (1.0, -1), (-1.0, 1), (-1.0, -1))  # fmt: skip
N_SCENARIOS = 16
VOLATILITY_LEG = np.array([v for _, v in _REGULAR] + [0, 0], dtype=np.int8)


def scenario_moves(extreme_multiple: float = 3.0, extreme_coverage: float = 0.3) -> np.ndarray:
    """Weighted price moves of the 16 scenarios as fractions of the scan range (CME order).

    The extreme rows are +-extreme_multiple * extreme_coverage: move times the share counted.
    """
    if not (math.isfinite(extreme_multiple) and extreme_multiple > 0):
        raise ValueError(f"extreme_multiple must be a positive finite number, got {extreme_multiple!r}")
    if not (0.0 <= extreme_coverage <= 1.0):
        raise ValueError(f"extreme_coverage must lie in [0, 1], got {extreme_coverage!r}")
    extreme = extreme_multiple * extreme_coverage
    return np.array([m for m, _ in _REGULAR] + [extreme, -extreme], dtype=np.float64)


def scan_ranges(mark: np.ndarray, daily_vol: np.ndarray, confidence: float, horizon_days: float) -> np.ndarray:
    """Default price scan range per instrument: mark * z * daily_vol * sqrt(h), z = N^-1(confidence).

    Example: mark 60,000, daily vol 3%, 99% (z = 2.3263), 1 day: R = 4,187.4 per unit.
    """
    z = float(normal_ppf(confidence))
    return np.asarray(mark, dtype=np.float64) * z * np.asarray(daily_vol, dtype=np.float64) * math.sqrt(horizon_days)


def instrument_risk_arrays(
    scan_range: np.ndarray, extreme_multiple: float = 3.0, extreme_coverage: float = 0.3
) -> np.ndarray:
    """n_instruments x 16 losses of a long of one underlying unit (loss = -move)."""
    r = np.asarray(scan_range, dtype=np.float64)
    return -r[:, None] * scenario_moves(extreme_multiple, extreme_coverage)[None, :]


@dataclass(frozen=True)
class ScenarioMargin:
    """risk_array: n_accounts x 16 whole-account losses; requirement: scanning risk per account
    (>= 0, quote currency); worst: index (0-15) of the worst whole-account scenario."""

    risk_array: np.ndarray
    requirement: np.ndarray
    worst: np.ndarray


def _combined_commodity(instruments: list[Instrument], scan_by: ScanBy) -> np.ndarray:
    if scan_by == "portfolio":
        return np.zeros(len(instruments), dtype=np.int64)
    if scan_by not in ("underlying", "group"):
        raise ValueError(f"scan_by must be 'underlying', 'group' or 'portfolio', got {scan_by!r}")
    names = [getattr(i, scan_by) for i in instruments]
    _, code = np.unique(np.array(names, dtype=object).astype(str), return_inverse=True)
    return code.astype(np.int64)


def scenario_margin_arrays(
    pos_account: np.ndarray,
    pos_instrument: np.ndarray,
    units: np.ndarray,
    scan_range: np.ndarray,
    commodity: np.ndarray,
    n_accounts: int,
    extreme_multiple: float = 3.0,
    extreme_coverage: float = 0.3,
) -> ScenarioMargin:
    """Risk arrays and scanning risk from position arrays (any order).

    `units` are signed underlying units (qty * contract_size); `commodity` maps each instrument
    to its combined commodity. A position of 0 units contributes nothing, even on an instrument
    with an unknown (NaN) scan range; a non-zero one there makes its account's figures NaN.
    """
    units = np.asarray(units, dtype=np.float64)
    inst = np.asarray(pos_instrument, dtype=np.int64)
    acct = np.asarray(pos_account, dtype=np.int64)
    arrays = instrument_risk_arrays(scan_range, extreme_multiple, extreme_coverage)  # n_inst x 16
    risk_array = np.zeros((n_accounts, N_SCENARIOS))
    requirement = np.zeros(n_accounts)
    held = np.flatnonzero(units != 0)
    if held.size:
        # Positions sorted by (account, combined commodity): each run of equal keys nets in one
        # reduceat, and the runs of one account are adjacent.
        n_cc = int(commodity.max(initial=0)) + 1
        key = acct[held] * n_cc + commodity[inst[held]]
        if (np.diff(key) < 0).any():
            order = np.argsort(key, kind="stable")
            held, key = held[order], key[order]
        starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
        # 16 x positions, rows contiguous: reduceat along the last axis is the fast one
        loss = np.ascontiguousarray(arrays.T)[:, inst[held]] * units[held]
        per_key = np.add.reduceat(loss, starts, axis=1)  # 16 x (account, commodity)
        key_account = key[starts] // n_cc
        first = np.flatnonzero(np.concatenate([[True], key_account[1:] != key_account[:-1]]))
        risk_array[key_account[first]] = np.add.reduceat(per_key, first, axis=1).T
        scanning = np.maximum(per_key.max(axis=0), 0.0)  # NaN propagates through max
        requirement[key_account[first]] = np.add.reduceat(scanning, first)
    worst = np.argmax(np.where(np.isnan(risk_array), -np.inf, risk_array), axis=1)
    return ScenarioMargin(risk_array, requirement, worst)


def scenario_margin(
    book: Book,
    scan_range: np.ndarray,
    extreme_multiple: float = 3.0,
    extreme_coverage: float = 0.3,
    scan_by: ScanBy = "underlying",
    positions: np.ndarray | None = None,
) -> ScenarioMargin:
    """Risk arrays and scanning-risk requirement of every account of the book.

    `scan_range` is per instrument (absolute price move per underlying unit); `positions`
    optionally restricts the computation to some positions (a boolean mask), e.g. those margined
    by this method. Example: long 1 BTC and short 1 BTC on two instruments of underlying BTC with
    one scan range: every scenario nets to 0, requirement 0.
    """
    units = book.pos_qty * book.contract_size[book.pos_instrument]
    if positions is not None:
        units = np.where(positions, units, 0.0)
    return scenario_margin_arrays(
        book.pos_account,
        book.pos_instrument,
        units,
        np.asarray(scan_range, dtype=np.float64),
        _combined_commodity(book.instruments, scan_by),
        book.n_accounts,
        extreme_multiple,
        extreme_coverage,
    )
