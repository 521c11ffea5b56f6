"""Initial-margin methods and the opt-in maintenance-margin adjustments."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from engine.actions.impact import ImpactModel
from engine.analytics.maintenance import VolatilityAdjustment, adjusted_maintenance, impact_addon
from engine.analytics.margin_methods import (
    MarginMethods,
    initial_margin,
    portfolio_margin,
    position_methods,
    risk_based_margin,
)
from engine.analytics.span import scenario_margin
from tests.engine.analytics.support import book, flat, tiered

PRICES = {"BTCUSDT": 60_000.0, "BTCPERP2": 60_000.0, "SOLUSDT": 150.0}


def instruments():
    return [
        tiered("BTCUSDT", underlying="BTC", group="majors"),
        tiered("BTCPERP2", underlying="BTC", group="majors"),
        flat("SOLUSDT", mmr=0.01, leverage=20, underlying="SOL", group="l1"),
    ]


def demo_book():
    return book(
        instruments(),
        {
            "hedged": (100_000.0, [("BTCUSDT", 1.0, 59_000.0), ("BTCPERP2", -1.0, 61_000.0)]),
            "mixed": (50_000.0, [("BTCUSDT", 0.5, 60_000.0), ("SOLUSDT", -200.0, 140.0)]),
            "flat": (10_000.0, []),
        },
        PRICES,
    )


def test_defaults_keep_the_venue_numbers():
    b = demo_book()
    im = initial_margin(b)
    assert im.total.tolist() == b.acct_im.tolist()
    assert set(im.by_method) == {"position"}
    # mixed: 30,000 / 125 + 30,000 / 20 = 240 + 1,500 = 1,740
    assert im.total[1] == pytest.approx(1_740.0, rel=1e-12)


def test_risk_based_margin_by_hand():
    # 100,000 * 3 * 2% * sqrt(4) = 12,000
    assert risk_based_margin(np.array([100_000.0]), np.array([0.02]), 3.0, 4.0)[0] == pytest.approx(12_000.0)
    b = demo_book()
    im = initial_margin(b, MarginMethods(default="risk"), daily_vol=np.array([0.03, 0.03, 0.05]))
    # mixed: 30,000 * 3 * 3% + 30,000 * 3 * 5% = 2,700 + 4,500 = 7,200
    assert im.total[1] == pytest.approx(7_200.0, rel=1e-12)
    assert im.total[2] == 0.0


def test_portfolio_margin_offsets_a_hedge_by_hand():
    # Stand-alone bracket IM of each leg: 60,000 / 100 = 600, signs + and -; correlation 0.95:
    # sqrt(600^2 + 600^2 - 2 * 0.95 * 600^2) = 600 * sqrt(0.1) = 189.74, against 1,200 stand-alone.
    b = demo_book()
    im = initial_margin(b, MarginMethods(default="portfolio"))
    assert im.total[0] == pytest.approx(600.0 * math.sqrt(0.1), rel=1e-12)
    # mixed: BTC (majors) and SOL (l1) are different groups: no offset, 240 + 1,500
    assert im.total[1] == pytest.approx(1_740.0, rel=1e-12)


@given(
    m=arrays(np.float64, (4, 6), elements=st.floats(-1e7, 1e7, allow_subnormal=False)),
    levels=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=2),
    blocks=st.lists(st.integers(0, 2), min_size=6, max_size=6),
)
def test_portfolio_margin_is_never_above_the_sum_of_stand_alone_margins(m, levels, blocks):
    same_group, same_underlying = sorted(levels)
    underlying = np.array([0, 0, 1, 1, 2, 3])
    group = np.array([0, 0, 0, 1, 1, 1])
    c = np.where(group[:, None] == group[None, :], same_group, 0.0)
    c = np.where(underlying[:, None] == underlying[None, :], same_underlying, c)
    np.fill_diagonal(c, 1.0)
    for b in (None, np.array(blocks)):
        pm = portfolio_margin(m, c, b)
        assert np.all(pm <= np.abs(m).sum(axis=1))
        assert np.all(pm >= 0.0)


def test_methods_are_chosen_by_group_and_accounts_override():
    b = demo_book()
    cfg = MarginMethods(groups={"l1": "risk"}, accounts={"hedged": "scenario"})
    assert position_methods(b, cfg).tolist() == [3, 3, 0, 1]  # hedged: scenario; mixed: BTC brackets, SOL risk
    vol = np.array([0.03, 0.03, 0.05])
    im = initial_margin(b, cfg, daily_vol=vol)
    assert im.position_method.tolist() == ["scenario", "scenario", "position", "risk"]
    # mixed: 30,000 / 125 (BTC brackets) + 30,000 * 3 * 5% (SOL risk-based) = 240 + 4,500
    assert im.total[1] == pytest.approx(4_740.0, rel=1e-12)
    assert im.by_method["scenario"][0] == pytest.approx(0.0, abs=1e-9)  # the hedge nets out


def test_the_scenario_method_is_the_span_requirement_and_takes_given_scan_ranges():
    b = demo_book()
    ranges = np.array([3_000.0, 3_000.0, np.nan])  # SOL derived from its volatility
    vol = np.array([0.03, 0.03, 0.05])
    im = initial_margin(b, MarginMethods(default="scenario"), daily_vol=vol, scan_range=ranges)
    # mixed: BTC 0.5 * 3,000 = 1,500; SOL 200 * 150 * 2.3263 * 5% = 3,489.5
    assert im.total[1] == pytest.approx(1_500.0 + 200 * 150 * 2.3263478740408408 * 0.05, rel=1e-12)
    span = scenario_margin(b, np.array([3_000.0, 3_000.0, 150 * 2.3263478740408408 * 0.05]))
    assert im.total == pytest.approx(span.requirement, rel=1e-12)


def test_volatility_adjustment_by_regime():
    # annualised vols 0.5 (calm), 0.9 (elevated, x1.25) for BTC/BTCPERP2, 1.5 (stressed, x1.5) for SOL
    b = demo_book()
    adj = adjusted_maintenance(b, annual_vol=np.array([0.5, 0.9, 1.5]), volatility=VolatilityAdjustment())
    # hedged: BTCPERP2 MM at 60,000 = 60,000 * 0.005 - 50 = 250 -> add-on 62.5
    assert adj.volatility[0] == pytest.approx(62.5, rel=1e-12)
    # mixed: SOL MM = 30,000 * 0.01 = 300 -> add-on 150; BTC calm: 0
    assert adj.volatility[1] == pytest.approx(150.0, rel=1e-12)
    assert adj.impact is None
    assert adj.maintenance_margin[1] == pytest.approx(b.acct_mm[1] + 150.0, rel=1e-12)
    assert adj.ratio[1] == pytest.approx(b.equity[1] / (b.acct_mm[1] + 150.0), rel=1e-12)
    assert adj.ratio[1] < b.ratio[1]


def test_market_impact_addon_by_hand():
    # 0.01 * sqrt(notional / depth) * notional: 1,000,000 into 4,000,000 -> 0.01 * 0.5 * 1e6 = 5,000
    inst = [flat("XUSDT", underlying="X").model_copy(update={"book_depth": 4_000_000.0})]
    b = book(inst, {"a": (500_000.0, [("XUSDT", 10_000.0, 100.0)])}, {"XUSDT": 100.0})
    assert impact_addon(b)[0] == pytest.approx(5_000.0, rel=1e-12)
    adj = adjusted_maintenance(b, impact=ImpactModel(taker_fee=0.0))
    assert adj.impact[0] == pytest.approx(5_000.0, rel=1e-12)
    assert adj.volatility is None
    # MM 1,000,000 * 1% = 10,000 -> 15,000 with the add-on; equity 500,000
    assert adj.ratio[0] == pytest.approx(500_000.0 / 15_000.0, rel=1e-12)


def test_volatility_adjustment_needs_volatilities():
    with pytest.raises(ValueError, match="annual_vol"):
        adjusted_maintenance(demo_book(), volatility=VolatilityAdjustment())
