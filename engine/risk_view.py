"""Live risk analytics for one account, from the guard's own state: 1-day 99% VaR and ES
(parametric), the worst ratio across the named stress scenarios, the probability of touching
the liquidation price (and the LIQUIDATION threshold) within a day, and where the ratio is
heading ("reaches CRITICAL in 3.1 h").

Volatility is the realised volatility of the marks the guard has seen, or the simulator's
configured volatility where too few marks have been seen yet; correlation from the
instrument groups. Shown in the account detail (console, API)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from engine.analytics.barrier import liquidation_touch_probability
from engine.analytics.history import project_ratio
from engine.analytics.inputs import correlation_from_groups, covariance, exposure_matrix, position_units
from engine.analytics.stress import NAMED_SCENARIOS, stress_test
from engine.analytics.var import parametric_var

if TYPE_CHECKING:
    from engine.guard import Guard

CONFIDENCE = 0.99
HORIZON_DAYS = 1.0


def _num(x: Any) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def daily_volatility(g: Guard) -> np.ndarray:
    annual = np.asarray(g._inst_vol, dtype=np.float64).copy()
    markets = g.config.simulator.markets
    configured = np.array([markets[i.symbol].volatility if i.symbol in markets else np.nan for i in g.book.instruments])
    annual = np.where(annual > 0, annual, configured)
    return annual / np.sqrt(365.0)


def account_risk(g: Guard, a: int) -> dict[str, Any]:
    book = g.book
    vol = daily_volatility(g)
    pos = book.account_positions(a)
    signed = position_units(book)[pos] * book.mark[book.pos_instrument[pos]]
    exposure = exposure_matrix(np.zeros(pos.size, dtype=np.int64), book.pos_instrument[pos], signed, 1, vol.size)
    cov = covariance(np.nan_to_num(vol), correlation_from_groups(book.instruments))
    var = parametric_var(exposure, cov, CONFIDENCE, HORIZON_DAYS)
    worst, scenario = None, None
    for s in NAMED_SCENARIOS:
        r = float(stress_test(book, s, 0).ratio[a])
        if np.isfinite(r) and (worst is None or r < worst):
            worst, scenario = r, s.name
    touch_venue = liquidation_touch_probability(book, vol, HORIZON_DAYS, "venue")[1][a]
    touch_liq = liquidation_touch_probability(book, vol, HORIZON_DAYS, "liquidation")[1][a]
    history = list(g.history[a])[-60:]
    heading: dict[str, float | None] = {}
    if len(history) >= 3:
        times = np.array([t for t, _ in history])
        ratios = np.array([[r for _, r in history]])
        thresholds = {
            "WARNING": book.warning[a : a + 1],
            "CRITICAL": book.critical[a : a + 1],
            "LIQUIDATION": book.liquidation[a : a + 1],
        }
        projection = project_ratio(times, ratios, book.acct_mm[a : a + 1], thresholds=thresholds)
        heading = projection.hours_to_threshold(0)
    return {
        "confidence": CONFIDENCE,
        "horizon_days": HORIZON_DAYS,
        "var_parametric": _num(var.var[0]),
        "es_parametric": _num(var.es[0]),
        "stress_worst_ratio": worst,
        "stress_worst_scenario": scenario,
        "touch_liquidation_price_prob": _num(touch_venue),
        "touch_liquidation_threshold_prob": _num(touch_liq),
        "hours_to": heading,
    }


# GuardView risk-analytics methods (shapes documented in engine.view.GuardView).
def book_risk(g: Guard) -> dict[str, Any]:
    raise NotImplementedError("book_risk: being built")


def stress(g: Guard, scenario: dict[str, Any] | str, top: int = 20) -> dict[str, Any]:
    raise NotImplementedError("stress: being built")


def scenario_grid(
    g: Guard, account_id: str, price_moves: list[float] | None, vol_shocks: list[float] | None
) -> dict[str, Any]:
    raise NotImplementedError("scenario_grid: being built")


def what_if(g: Guard, account_id: str, symbol: str, side: str, qty: float, price: float | None) -> dict[str, Any]:
    raise NotImplementedError("what_if: being built")
