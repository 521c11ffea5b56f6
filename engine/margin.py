"""Pure, vectorised margin math over arrays. No I/O, no clocks.

Units: prices and money in the collateral (quote) currency; quantities in signed contracts;
rates (mmr, initial-margin rate) as fractions. Linear contracts:

    notional            = |qty| * contract_size * mark
    unrealised PnL      = qty * contract_size * (mark - entry)
    maintenance margin  = notional * mmr - maintenance_amount     (tiered, continuous)
    initial margin      = notional / max_leverage
    margin ratio        = equity / maintenance margin             (higher is safer)

Brackets of every instrument live in one flat table; an instrument's brackets are contiguous,
its first floor is 0 and its last cap is +inf, so walking a cached bracket index up or down
never leaves the instrument's block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.model import Instrument


@dataclass(frozen=True)
class BracketTable:
    """All instruments' brackets, flattened. `start[i]` is instrument i's first bracket."""

    floor: np.ndarray
    cap: np.ndarray
    mmr: np.ndarray
    cum: np.ndarray
    im_rate: np.ndarray  # 1 / max_leverage, NaN where the bracket has no max leverage
    start: np.ndarray
    count: np.ndarray

    @classmethod
    def from_instruments(cls, instruments: list[Instrument]) -> BracketTable:
        floor: list[float] = []
        cap: list[float] = []
        mmr: list[float] = []
        cum: list[float] = []
        im_rate: list[float] = []
        start: list[int] = []
        count: list[int] = []
        for inst in instruments:
            start.append(len(floor))
            count.append(len(inst.brackets))
            for n, b in enumerate(inst.brackets):
                floor.append(b.floor)
                # The last tier is open-ended here even when the table states a cap: a notional
                # above it stays in the last tier instead of walking into the next instrument's block.
                last = n == len(inst.brackets) - 1
                cap.append(np.inf if b.cap is None or last else b.cap)
                mmr.append(b.mmr)
                cum.append(b.maintenance_amount or 0.0)
                im_rate.append(np.nan if b.max_leverage is None else 1.0 / b.max_leverage)
        return cls(
            floor=np.asarray(floor, dtype=np.float64),
            cap=np.asarray(cap, dtype=np.float64),
            mmr=np.asarray(mmr, dtype=np.float64),
            cum=np.asarray(cum, dtype=np.float64),
            im_rate=np.asarray(im_rate, dtype=np.float64),
            start=np.asarray(start, dtype=np.int64),
            count=np.asarray(count, dtype=np.int64),
        )


def walk_brackets(notional: np.ndarray, bracket: np.ndarray, table: BracketTable) -> np.ndarray:
    """Return the bracket index holding each notional, starting from a cached guess.

    Only entries whose notional left their cached bracket are touched, and each step moves
    them one tier, so the usual cost is one comparison per position.
    """
    bracket = bracket.copy()
    todo = np.flatnonzero((notional < table.floor[bracket]) | (notional >= table.cap[bracket]))
    while todo.size:
        b = bracket[todo]
        n = notional[todo]
        step = (n >= table.cap[b]).astype(np.int64) - (n < table.floor[b]).astype(np.int64)
        moving = step != 0
        todo = todo[moving]
        bracket[todo] += step[moving]
    return bracket


def lookup_brackets(notional: np.ndarray, instrument: np.ndarray, table: BracketTable) -> np.ndarray:
    """Bracket index for each notional with no cached guess (per-instrument binary search)."""
    bracket = table.start[instrument].copy()
    for i in np.unique(instrument):
        sel = np.flatnonzero(instrument == i)
        s, c = table.start[i], table.count[i]
        k = np.searchsorted(table.floor[s : s + c], notional[sel], side="right") - 1
        bracket[sel] = s + np.maximum(k, 0)
    return bracket


@dataclass
class PositionValues:
    notional: np.ndarray
    unrealized_pnl: np.ndarray
    maintenance_margin: np.ndarray
    initial_margin: np.ndarray
    bracket: np.ndarray


def value_positions(
    qty: np.ndarray,
    entry: np.ndarray,
    contract_size: np.ndarray,
    mark: np.ndarray,
    bracket_guess: np.ndarray,
    table: BracketTable,
) -> PositionValues:
    """Notional, unrealised PnL, maintenance and initial margin per position (arrays aligned)."""
    units = qty * contract_size
    notional = np.abs(units) * mark
    upnl = units * (mark - entry)
    bracket = walk_brackets(notional, bracket_guess, table)
    mm = notional * table.mmr[bracket] - table.cum[bracket]
    im = notional * table.im_rate[bracket]
    return PositionValues(notional, upnl, mm, im, bracket)


def segment_sum(values: np.ndarray, starts: np.ndarray, nonempty: np.ndarray, n_segments: int) -> np.ndarray:
    """Sum of `values` over contiguous segments; empty segments sum to 0.

    `starts` are the start offsets of the non-empty segments (in order), `nonempty` their
    segment indices.
    """
    out = np.zeros(n_segments, dtype=np.float64)
    if starts.size:
        out[nonempty] = np.add.reduceat(values, starts)
    return out


def margin_ratio(equity: np.ndarray, maintenance_margin: np.ndarray) -> np.ndarray:
    """equity / maintenance margin; +inf where nothing is held (maintenance margin 0), NaN where
    the maintenance margin is unknown (an unpriced position)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = equity / maintenance_margin
    return np.where(maintenance_margin > 0, ratio, np.where(np.isnan(maintenance_margin), np.nan, np.inf))


def liquidation_prices(
    qty: np.ndarray,
    entry: np.ndarray,
    contract_size: np.ndarray,
    bracket_now: np.ndarray,
    collateral: np.ndarray,
    other_mm: np.ndarray,
    other_upnl: np.ndarray,
    table: BracketTable,
) -> np.ndarray:
    """Mark price at which each position's account (cross) or the position (isolated) hits
    equity == maintenance margin, the other positions held at their current marks.

    Binance's one-way formula, for a position of size Q = |qty| * contract_size, side s (+1 long,
    -1 short), entry EP, and the bracket (mmr, cum) that applies at the liquidation price:

        LP = (collateral - other_mm + other_upnl + cum - s * Q * EP) / (Q * mmr - s * Q)

    `collateral` is the wallet balance (cross) or the isolated margin (isolated, with other_*
    zero). The bracket is found by walking from the current one until the notional at the
    candidate price lies in the bracket used. NaN where no positive price exists or qty is 0.
    """
    side = np.sign(qty)
    size = np.abs(qty) * contract_size
    base = collateral - other_mm + other_upnl - side * size * entry
    bracket = bracket_now.copy()
    lp = np.full(qty.shape, np.nan)
    todo = np.flatnonzero(size > 0)

    def settle(todo: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = size[todo]
        with np.errstate(divide="ignore", invalid="ignore"):
            cand = (base[todo] + table.cum[b]) / (q * table.mmr[b] - side[todo] * q)
        n = q * np.maximum(cand, 0.0)
        step = (n >= table.cap[b]).astype(np.int64) - (n < table.floor[b]).astype(np.int64)
        done = step == 0
        lp[todo[done]] = cand[done]
        return done, step

    # Each pass settles the positions whose candidate price falls inside the bracket used;
    # the others step one tier toward it. With rates rising by tier (maintenance margin
    # convex) this converges within K passes for K tiers.
    for _ in range(int(table.count.max(initial=1)) + 1):
        if not todo.size:
            break
        done, step = settle(todo, bracket[todo])
        todo = todo[~done]
        bracket[todo] += step[~done]
    # A table whose rates do not rise by tier can make the walk cycle: try every tier.
    if todo.size:
        first = table.start[instrument_of_bracket(bracket[todo], table)]
        count = table.count[instrument_of_bracket(bracket[todo], table)]
        for k in range(int(count.max())):
            open_ = np.flatnonzero((k < count) & np.isnan(lp[todo]))
            if open_.size:
                settle(todo[open_], first[open_] + k)
    lp[~(lp > 0)] = np.nan
    return lp


def instrument_of_bracket(bracket: np.ndarray, table: BracketTable) -> np.ndarray:
    """Index of the instrument each flat bracket index belongs to."""
    return np.searchsorted(table.start, bracket, side="right") - 1
