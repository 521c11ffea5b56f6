"""Stress tests: named and ad-hoc scenarios, the worst stressed ratio, and price x volatility grids.

A scenario moves marks by a fraction (-0.10 = a 10% fall) and volatilities by a relative shock
(+0.5 = volatility * 1.5), each keyed by symbol, underlying, group or "*" (everything); the most
specific key wins: symbol > underlying > group > "*". Positions are re-valued at the shocked
marks on a copy of the book's arrays (engine.analytics.revalue, bracket-aware), the book itself
is untouched.

Linear contracts have no volatility exposure: a volatility shock moves no PnL. It matters only
through a volatility-dependent maintenance margin (the opt-in volatility adjustment, given
`annual_vol` and `volatility`), which is then re-evaluated at the shocked volatility.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.analytics.maintenance import VolatilityAdjustment, volatility_addon
from engine.analytics.revalue import Valuation, account_sums, value_at_marks
from engine.book import Book
from engine.model import Instrument


class StressScenario(BaseModel):
    """A named market shock. moves: fractional price moves; vol_shocks: relative volatility changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    moves: dict[str, float] = Field(default_factory=dict)
    vol_shocks: dict[str, float] = Field(default_factory=dict)

    @field_validator("moves", "vol_shocks")
    @classmethod
    def _above_minus_one(cls, v: dict[str, float]) -> dict[str, float]:
        for key, x in v.items():
            if not (np.isfinite(x) and x > -1.0):
                raise ValueError(f"{key}: a shock must be a finite fraction above -1, got {x!r}")
        return v


# Named scenarios on the demo's groups (majors, l1, defi, meme); anything else moves with "*".
NAMED_SCENARIOS: tuple[StressScenario, ...] = (
    StressScenario(name="market -10%", moves={"*": -0.10}, vol_shocks={"*": 0.5}),
    StressScenario(name="market +10%", moves={"*": 0.10}, vol_shocks={"*": 0.3}),
    StressScenario(
        name="crypto crash",
        description="majors -20%, alts -30%, memes -40%, volatility doubled",
        moves={"*": -0.30, "majors": -0.20, "meme": -0.40},
        vol_shocks={"*": 1.0},
    ),
    StressScenario(
        name="short squeeze",
        description="alts +25%, memes +40%, majors +10%",
        moves={"*": 0.25, "majors": 0.10, "meme": 0.40},
        vol_shocks={"*": 0.8},
    ),
    StressScenario(name="majors decouple", description="BTC and ETH -15%, the rest flat", moves={"majors": -0.15}),
)


def instrument_shocks(instruments: Sequence[Instrument], shocks: Mapping[str, float]) -> np.ndarray:
    """Shock per instrument from keys symbol > underlying > group > "*" (0 when none applies)."""
    default = shocks.get("*", 0.0)
    out = []
    for i in instruments:
        for key in (i.symbol, i.underlying, i.group):
            if key is not None and key in shocks:
                out.append(shocks[key])
                break
        else:
            out.append(default)
    return np.asarray(out, dtype=np.float64)


@dataclass(frozen=True)
class StressResult:
    """Figures after one scenario. Per account: equity, ratio, level, pnl (equity change) and
    drivers (n_accounts x top position indices, the largest losses first, -1 padded); per
    position: pnl; per instrument: the shocked marks."""

    scenario: str
    marks: np.ndarray
    equity: np.ndarray
    maintenance_margin: np.ndarray
    ratio: np.ndarray
    level: np.ndarray
    pnl: np.ndarray
    position_pnl: np.ndarray
    drivers: np.ndarray


def loss_drivers(pos_account: np.ndarray, position_pnl: np.ndarray, n_accounts: int, top: int = 3) -> np.ndarray:
    """n_accounts x top position indices with the largest losses (pnl < 0) first; -1 pads."""
    out = np.full((n_accounts, top), -1, dtype=np.int64)
    losing = np.flatnonzero(position_pnl < 0)
    if not losing.size or top <= 0:
        return out
    order = losing[np.lexsort((position_pnl[losing], pos_account[losing]))]  # by account, then worst first
    acct = pos_account[order]
    first = np.flatnonzero(np.concatenate([[True], acct[1:] != acct[:-1]]))
    counts = np.diff(np.append(first, acct.size))
    rank = np.arange(acct.size) - np.repeat(first, counts)
    keep = rank < top
    out[acct[keep], rank[keep]] = order[keep]
    return out


def _valuation(
    book: Book,
    price_moves: np.ndarray,
    vol_moves: np.ndarray,
    annual_vol: np.ndarray | None,
    volatility: VolatilityAdjustment | None,
    accounts: np.ndarray | None = None,
) -> tuple[np.ndarray, Valuation]:
    marks = book.mark * (1.0 + price_moves)
    base = value_at_marks(book, marks, accounts=accounts)
    if volatility is None or annual_vol is None:
        return marks, base
    shocked = annual_vol * (1.0 + vol_moves)
    addon = volatility_addon(base.maintenance_margin, book.pos_instrument[base.positions], shocked, volatility)
    return marks, value_at_marks(book, marks, addon, accounts)


def _position_pnl(book: Book, marks: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """units * (shocked mark - mark): the change directly, free of cancellation against entry."""
    inst = book.pos_instrument[positions]
    return book.pos_qty[positions] * book.contract_size[inst] * (marks[inst] - book.mark[inst])


def stress_test(
    book: Book,
    scenario: StressScenario,
    top: int = 3,
    annual_vol: np.ndarray | None = None,
    volatility: VolatilityAdjustment | None = None,
) -> StressResult:
    """Re-value the book under `scenario`: per account equity, ratio and level after the shock,
    and the positions that drive the loss. Example: -10% on a long-only account lowers its
    equity by exactly 10% of its long notional."""
    moves = instrument_shocks(book.instruments, scenario.moves)
    vol_moves = instrument_shocks(book.instruments, scenario.vol_shocks)
    marks, v = _valuation(book, moves, vol_moves, annual_vol, volatility)
    position_pnl = _position_pnl(book, marks, v.positions)
    return StressResult(
        scenario=scenario.name,
        marks=marks,
        equity=v.equity,
        maintenance_margin=v.account_mm,
        ratio=v.ratio,
        level=v.level,
        pnl=account_sums(book, position_pnl),
        position_pnl=position_pnl,
        drivers=loss_drivers(book.pos_account, position_pnl, book.n_accounts, top),
    )


def stress_ratio(
    book: Book,
    scenarios: Sequence[StressScenario] = NAMED_SCENARIOS,
    annual_vol: np.ndarray | None = None,
    volatility: VolatilityAdjustment | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Worst ratio per account across the scenarios, and the index of the scenario that gives it.

    An unknown (NaN) ratio in any scenario makes the account's worst ratio NaN.
    """
    ratios = np.stack([stress_test(book, s, 0, annual_vol, volatility).ratio for s in scenarios])
    worst = np.argmin(np.where(np.isnan(ratios), -np.inf, ratios), axis=0)
    return np.take_along_axis(ratios, worst[None, :], axis=0)[0], worst


@dataclass(frozen=True)
class ScenarioGrid:
    """One account under price moves (rows) x volatility shocks (columns)."""

    account: str
    price_moves: np.ndarray
    vol_shocks: np.ndarray
    pnl: np.ndarray
    equity: np.ndarray
    maintenance_margin: np.ndarray
    ratio: np.ndarray
    level: np.ndarray

    def rows(self) -> list[dict[str, float]]:
        """The table as records: price_move, vol_shock, pnl, equity, maintenance_margin, ratio, level."""
        return [
            {
                "price_move": float(self.price_moves[i]),
                "vol_shock": float(self.vol_shocks[j]),
                "pnl": float(self.pnl[i, j]),
                "equity": float(self.equity[i, j]),
                "maintenance_margin": float(self.maintenance_margin[i, j]),
                "ratio": float(self.ratio[i, j]),
                "level": int(self.level[i, j]),
            }
            for i in range(self.price_moves.size)
            for j in range(self.vol_shocks.size)
        ]


def scenario_grid(
    book: Book,
    account: str,
    price_moves: Sequence[float] = (-0.3, -0.2, -0.1, -0.05, 0.0, 0.05, 0.1, 0.2, 0.3),
    vol_shocks: Sequence[float] = (0.0, 0.5, 1.0),
    annual_vol: np.ndarray | None = None,
    volatility: VolatilityAdjustment | None = None,
) -> ScenarioGrid:
    """Every instrument moved by each price move, each volatility shocked by each vol shock
    (ad-hoc scenarios "*"); the account's pnl, equity, MM, ratio and level per cell."""
    a = book.account_index[account]
    pm = np.asarray(price_moves, dtype=np.float64)
    vs = np.asarray(vol_shocks, dtype=np.float64)
    shape = (pm.size, vs.size)
    pnl, equity, mm, ratio = (np.empty(shape) for _ in range(4))
    level = np.empty(shape, dtype=np.int8)
    n_inst = len(book.instruments)
    only = np.array([a])
    for i, move in enumerate(pm):  # one re-valuation of the account's positions per cell
        for j, shock in enumerate(vs):
            marks, v = _valuation(book, np.full(n_inst, move), np.full(n_inst, shock), annual_vol, volatility, only)
            pnl[i, j] = _position_pnl(book, marks, v.positions).sum()
            equity[i, j], mm[i, j], ratio[i, j], level[i, j] = v.equity[0], v.account_mm[0], v.ratio[0], v.level[0]
    return ScenarioGrid(account, pm, vs, pnl, equity, mm, ratio, level)
