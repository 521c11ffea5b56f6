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
        ratio = np.asarray(np.divide(equity, maintenance_margin))  # NaN stays NaN
    nothing = np.asarray(maintenance_margin) <= 0
    if nothing.any():
        ratio = np.where(nothing, np.inf, ratio)
    return ratio


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
    units = qty * contract_size  # s * Q
    base = collateral - other_mm + other_upnl - units * entry
    return solve_liquidation(units, base, bracket_now, table)


def solve_liquidation(
    units: np.ndarray,
    base: np.ndarray,
    bracket_now: np.ndarray,
    table: BracketTable,
    tier: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
    instrument: np.ndarray | None = None,
) -> np.ndarray:
    """LP = (base + cum) / (Q * mmr - s * Q) with the bracket that holds the notional at LP.

    `units` is s * Q (signed size in underlying units), `base` is
    collateral - other_mm + other_upnl - s * Q * EP. `tier` optionally gives the floor, cap, mmr
    and cum of `bracket_now` per position (a cache), saving the first pass its table lookups;
    `instrument` optionally gives each position's instrument.

    A first pass tries the current bracket. The positions whose price falls outside it get
    their bracket from `liquidation_brackets` and are checked the same way; any left over
    (rounding at a boundary, or a table whose rates do not rise by tier) walk tier by tier,
    and as a last resort every tier is tried.
    """
    size = np.abs(units)
    if tier is None:
        lo, hi, mmr, cum = (
            table.floor[bracket_now],
            table.cap[bracket_now],
            table.mmr[bracket_now],
            table.cum[bracket_now],
        )
    else:
        lo, hi, mmr, cum = tier
    # First pass over everything from the current bracket, in place on full-size arrays.
    with np.errstate(divide="ignore", invalid="ignore"):  # nothing held: 0/0 and inf*0, NaN
        den = size * mmr
        den -= units
        lp = base + cum
        lp /= den
        n = np.maximum(lp, 0.0)
        n *= size
    below = n < lo
    below |= n >= hi
    # With maintenance margin continuous at every floor (derived or consistent cum), equity - MM
    # is monotone in the price: no liquidation price at all when its value at price 0,
    # base + cum of the first tier, already has the sign it keeps (a long only gains from a
    # rising price, a short from a falling one). Those need no search.
    if instrument is None:
        instrument = instrument_of_bracket(bracket_now, table)
    if continuous(table):
        cum0 = table.cum[table.start]
        f0 = base * units if not cum0.any() else (base + cum0[instrument]) * units
        below &= f0 < 0
    else:
        f0 = np.where(size > 0, -1.0, 0.0)  # search everything held, as tier by tier
    todo = np.flatnonzero(below)
    if todo.size:
        bracket = liquidation_brackets(units[todo], base[todo], instrument[todo], table)
        lp[todo] = np.nan

    def settle(todo: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = size[todo]
        with np.errstate(divide="ignore", invalid="ignore"):
            cand = (base[todo] + table.cum[b]) / (q * table.mmr[b] - units[todo])
        n = q * np.maximum(cand, 0.0)
        step = (n >= table.cap[b]).astype(np.int64) - (n < table.floor[b]).astype(np.int64)
        done = step == 0
        lp[todo[done]] = cand[done]
        return done, step

    # Each pass settles the positions whose candidate price falls inside the bracket used;
    # the others step one tier toward it. With rates rising by tier (maintenance margin
    # convex) this converges within K passes for K tiers.
    for _ in range(int(table.count.max(initial=1))):
        if not todo.size:
            break
        done, step = settle(todo, bracket)
        todo, bracket = todo[~done], bracket[~done] + step[~done]
    # A table whose rates do not rise by tier can make the walk cycle: try every tier.
    if todo.size:
        first = table.start[instrument_of_bracket(bracket, table)]
        count = table.count[instrument_of_bracket(bracket, table)]
        for k in range(int(count.max())):
            open_ = np.flatnonzero((k < count) & np.isnan(lp[todo]))
            if open_.size:
                settle(todo[open_], first[open_] + k)
    # No positive price (f0 >= 0 covers nothing held too): NaN.
    valid = lp > 0
    valid &= f0 < 0
    return np.where(valid, lp, np.nan)


def liquidation_brackets(
    units: np.ndarray, base: np.ndarray, instrument: np.ndarray, table: BracketTable
) -> np.ndarray:
    """The bracket holding the notional N* at which equity == maintenance margin, directly.

    With s the side and B = `base`, equity - MM at notional N is f(N) = B + s*N - MM(N), monotone
    in N (rising for a long, falling for a short, as every mmr < 1). So N* lies at or above
    the floor F_k of tier k exactly when s * B <= s * MM(F_k) - F_k, and the tier is the number
    of floors above the first for which that holds. No positive N* (no liquidation price)
    gives tier 0. One comparison per tier boundary, against per-(instrument, side) tables.
    """
    n_inst = table.start.size
    short = units < 0
    group = 2 * instrument + short
    signed_base = np.where(short, -base, base)
    tier = np.zeros(units.shape, dtype=np.int16)
    for k in range(1, int(table.count.max(initial=1))):
        has = np.flatnonzero(k < table.count)
        j = table.start[has] + k
        f = table.floor[j]
        mm = f * table.mmr[j] - table.cum[j]
        threshold = np.full(2 * n_inst, -np.inf)
        threshold[2 * has] = mm - f
        threshold[2 * has + 1] = -mm - f
        tier += signed_base <= threshold[group]
    return table.start[instrument] + tier


def continuous(table: BracketTable) -> bool:
    """True when maintenance margin has no jump at any bracket floor (to 1e-9 relative)."""
    upper = np.ones(table.floor.size, dtype=bool)
    upper[table.start] = False  # each instrument's first bracket has no floor below it
    j = np.flatnonzero(upper)
    f = table.floor[j]
    at = f * table.mmr[j] - table.cum[j]
    below = f * table.mmr[j - 1] - table.cum[j - 1]
    return bool(np.all(np.abs(at - below) <= 1e-9 * np.maximum(np.abs(at), 1.0)))


def instrument_of_bracket(bracket: np.ndarray, table: BracketTable) -> np.ndarray:
    """Index of the instrument each flat bracket index belongs to."""
    return np.searchsorted(table.start, bracket, side="right") - 1


def liquidation_distance_pct(qty: np.ndarray | float, mark: np.ndarray | float, liq: np.ndarray | float) -> np.ndarray:
    """How far the mark may move against the position before its liquidation price, in percent
    of mark: positive while the mark is on the safe side, negative once past it (a long whose
    liquidation price is above the mark is already under water). NaN where there is no price.
    Example: long, mark 61,000, liquidation 40,160.64: +34.16; long, mark 50,000, liquidation
    55,000: -10."""
    q, m, lp = (np.asarray(x, dtype=np.float64) for x in (qty, mark, liq))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sign(q) * (m - lp) / m * 100.0
