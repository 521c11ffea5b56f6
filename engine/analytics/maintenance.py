"""Opt-in maintenance-margin adjustments, each reported on its own.

- volatility: in a high-volatility regime the position's maintenance margin is scaled up,
  add-on = MM * (multiplier - 1), the regime read from the instrument's annualised volatility
  (strictly above `elevated_above`: elevated; above `stressed_above`: stressed), as the
  dynamic thresholds read theirs;
- market impact: the estimated cost of liquidating the position into the book,
  add-on = 0.01 * k * sqrt(notional / depth) * notional (engine.actions.impact.ImpactModel
  slippage, no fee), depth per instrument as the impact model takes it.

Neither changes the book; `adjusted_maintenance` reports the add-ons per account and the
ratio and level with the enabled ones added to the maintenance margin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.analytics.revalue import account_figures, account_sums
from engine.book import Book

if TYPE_CHECKING:  # engine.actions pulls in the executor and journal: imported when used
    from engine.actions.impact import ImpactModel


class VolatilityAdjustment(BaseModel):
    """Maintenance-margin multipliers by volatility regime (annualised volatility, fraction)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    elevated_above: float = Field(default=0.75, gt=0)
    stressed_above: float = Field(default=1.2, gt=0)
    elevated_multiplier: float = Field(default=1.25, ge=1)
    stressed_multiplier: float = Field(default=1.5, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> VolatilityAdjustment:
        if not (self.elevated_above < self.stressed_above and self.elevated_multiplier <= self.stressed_multiplier):
            raise ValueError("need elevated_above < stressed_above and elevated_multiplier <= stressed_multiplier")
        return self

    def multiplier(self, annual_vol: np.ndarray) -> np.ndarray:
        """1, elevated or stressed multiplier per volatility; NaN volatility: 1 (no regime known)."""
        v = np.asarray(annual_vol, dtype=np.float64)
        return np.where(
            v > self.stressed_above,
            self.stressed_multiplier,
            np.where(v > self.elevated_above, self.elevated_multiplier, 1.0),
        )


def volatility_addon(
    maintenance_margin: np.ndarray, pos_instrument: np.ndarray, annual_vol: np.ndarray, adjustment: VolatilityAdjustment
) -> np.ndarray:
    """Per position: MM * (multiplier of its instrument's regime - 1)."""
    return maintenance_margin * (adjustment.multiplier(annual_vol)[pos_instrument] - 1.0)


def impact_addon(book: Book, notional: np.ndarray | None = None, model: ImpactModel | None = None) -> np.ndarray:
    """Per position: estimated liquidation cost 0.01 * k * sqrt(notional / depth) * notional.

    Example: 1,000,000 notional into 4,000,000 of depth, k 1: 0.01 * 0.5 * 1e6 = 5,000.
    """
    if model is None:
        from engine.actions.impact import ImpactModel

        model = ImpactModel(taker_fee=0.0)
    depth = np.array([model.depth(i) for i in book.instruments], dtype=np.float64)
    n = book.notional if notional is None else notional
    return np.asarray(model.slippage(n, depth[book.pos_instrument]), dtype=np.float64)


@dataclass(frozen=True)
class MaintenanceAdjustments:
    """Add-ons per account (None when not enabled), and the adjusted MM, ratio and level."""

    volatility: np.ndarray | None
    impact: np.ndarray | None
    maintenance_margin: np.ndarray
    ratio: np.ndarray
    level: np.ndarray


def adjusted_maintenance(
    book: Book,
    annual_vol: np.ndarray | None = None,
    volatility: VolatilityAdjustment | None = None,
    impact: ImpactModel | None = None,
) -> MaintenanceAdjustments:
    """The enabled adjustments (volatility needs `annual_vol` per instrument) at the book's marks."""
    addon = np.zeros(book.pos_qty.size)
    vol_acct = impact_acct = None
    if volatility is not None:
        if annual_vol is None:
            raise ValueError("the volatility adjustment needs annual_vol per instrument")
        v = volatility_addon(book.maintenance_margin, book.pos_instrument, annual_vol, volatility)
        vol_acct = account_sums(book, v)
        addon += v
    if impact is not None:
        i = impact_addon(book, model=impact)
        impact_acct = account_sums(book, i)
        addon += i
    _, mm, ratio, level = account_figures(book, book.unrealized_pnl, book.maintenance_margin + addon)
    return MaintenanceAdjustments(vol_acct, impact_acct, mm, ratio, level)
