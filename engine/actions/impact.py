"""Square-root market impact and taker fees: the cost model every plan is priced with.

    slippage fraction = 0.01 * k * sqrt(order notional / book depth)

`book_depth` is the quote notional resting within 1% of the mark, so an order as large as the
whole depth moves the price about 1% (k = 1). When an instrument states no depth, a day's
volume / `adv_days` stands in for it; with neither, `default_depth`. The fee is the taker rate
on the notional. All functions accept numpy arrays as well as floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.model import Instrument


@dataclass(frozen=True)
class ImpactModel:
    k: float = 1.0  # impact coefficient (1 = the whole depth moves the price 1%)
    taker_fee: float = 0.0005  # fraction of the traded notional
    default_depth: float = 1_000_000.0  # quote currency, when an instrument states neither depth nor volume
    adv_days: float = 250.0  # depth estimate = avg_daily_volume / adv_days when book_depth is missing

    def __post_init__(self) -> None:
        for name in ("k", "taker_fee"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"impact {name} must be a finite number >= 0, got {v!r}")
        for name in ("default_depth", "adv_days"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"impact {name} must be a positive finite number, got {v!r}")

    def depth(self, instrument: Instrument) -> float:
        """Quote notional within 1% of the mark for this instrument."""
        if instrument.book_depth is not None:
            return float(instrument.book_depth)
        if instrument.avg_daily_volume is not None:
            return float(instrument.avg_daily_volume) / self.adv_days
        return self.default_depth

    def slippage_fraction(self, notional: float | np.ndarray, depth: float | np.ndarray) -> float | np.ndarray:
        """Adverse price move of an order of `notional`, as a fraction of the mark."""
        return 0.01 * self.k * np.sqrt(np.maximum(notional, 0.0) / depth)

    def slippage(self, notional: float | np.ndarray, depth: float | np.ndarray) -> float | np.ndarray:
        """Slippage in quote currency: notional * slippage fraction."""
        return np.maximum(notional, 0.0) * self.slippage_fraction(notional, depth)

    def fee(self, notional: float | np.ndarray) -> float | np.ndarray:
        return np.maximum(notional, 0.0) * self.taker_fee

    def estimated_cost(self, notional: float | np.ndarray, depth: float | np.ndarray) -> float | np.ndarray:
        """Slippage plus taker fee of one order of `notional` into a book of `depth` (quote currency)."""
        return self.slippage(notional, depth) + self.fee(notional)

    def max_notional(self, depth: float | np.ndarray, max_slippage: float) -> float | np.ndarray:
        """The largest order whose slippage fraction stays at or below `max_slippage`."""
        if self.k == 0:
            return np.inf * np.ones_like(depth) if isinstance(depth, np.ndarray) else math.inf
        return depth * (max_slippage / (0.01 * self.k)) ** 2
