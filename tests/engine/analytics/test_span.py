"""SPAN-style risk arrays and scanning risk."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.analytics.span import VOLATILITY_LEG, scan_ranges, scenario_margin, scenario_moves
from tests.engine.analytics.support import book, flat

PRICES = {"BTCUSDT": 60_000.0, "BTCPERP2": 60_100.0, "ETHUSDT": 3_000.0}


def instruments():
    return [
        flat("BTCUSDT", underlying="BTC", group="majors"),
        flat("BTCPERP2", underlying="BTC", group="majors"),
        flat("ETHUSDT", underlying="ETH", group="majors"),
    ]


def test_the_sixteen_scenarios_in_cme_order():
    moves = scenario_moves(3.0, 0.3)
    third = 1 / 3
    expected = [0, 0, third, third, -third, -third, 2 * third, 2 * third, -2 * third, -2 * third]
    expected += [1, 1, -1, -1, 0.9, -0.9]  # the full range, then the extremes: 3 ranges counted at 30%
    assert moves == pytest.approx(expected, rel=1e-15)
    assert VOLATILITY_LEG.tolist() == [1, -1] * 7 + [0, 0]


def test_risk_array_of_a_long_by_hand():
    # Long 2 BTC, scan range 3,000: losses -2 * move * 3,000 -> 0, -2,000, +2,000, -4,000, +4,000,
    # -6,000, +6,000 in pairs (vol up = vol down), extremes -/+ 2 * 3 * 3,000 * 0.3 = -/+5,400.
    b = book(instruments(), {"a": (50_000.0, [("BTCUSDT", 2.0, 59_000.0)])}, PRICES)
    r = scenario_margin(b, np.array([3_000.0, 3_000.0, 150.0]))
    expected = [0, 0, -2000, -2000, 2000, 2000, -4000, -4000, 4000, 4000, -6000, -6000, 6000, 6000, -5400, 5400]
    assert r.risk_array[0] == pytest.approx(expected, rel=1e-12)
    assert r.requirement[0] == pytest.approx(6_000.0, rel=1e-12)  # the -3/3 scenario
    assert r.worst[0] == 12


def test_the_extreme_move_governs_when_its_counted_share_exceeds_the_range():
    # 4 x range counted at 35% = 1.4 ranges: a short of 1 BTC loses 1.4 * 3,000 = 4,200 on +extreme
    b = book(instruments(), {"a": (50_000.0, [("BTCUSDT", -1.0, 59_000.0)])}, PRICES)
    r = scenario_margin(b, np.array([3_000.0, 3_000.0, 150.0]), extreme_multiple=4.0, extreme_coverage=0.35)
    assert r.requirement[0] == pytest.approx(4_200.0, rel=1e-12)
    assert r.worst[0] == 14


def test_a_perfectly_hedged_pair_needs_no_scenario_margin():
    b = book(instruments(), {"a": (50_000.0, [("BTCUSDT", 2.5, 59_000.0), ("BTCPERP2", -2.5, 61_000.0)])}, PRICES)
    r = scenario_margin(b, np.array([3_000.0, 3_000.0, 150.0]))
    assert np.all(r.risk_array == 0.0)
    assert r.requirement[0] == 0.0


@given(qty=st.floats(0.001, 1_000.0), ratio=st.floats(0.0, 1.0), scan=st.floats(1.0, 10_000.0))
def test_hedging_never_raises_the_requirement_and_a_full_hedge_zeroes_it(qty, ratio, scan):
    ranges = np.array([scan, scan, 100.0])
    alone = book(instruments(), {"a": (1e6, [("BTCUSDT", qty, 60_000.0)])}, PRICES)
    hedged = book(
        instruments(), {"a": (1e6, [("BTCUSDT", qty, 60_000.0), ("BTCPERP2", -qty * ratio, 60_000.0)])}, PRICES
    )
    full = book(instruments(), {"a": (1e6, [("BTCUSDT", qty, 60_000.0), ("BTCPERP2", -qty, 60_000.0)])}, PRICES)
    assert scenario_margin(hedged, ranges).requirement[0] <= scenario_margin(alone, ranges).requirement[0] * (1 + 1e-12)
    assert scenario_margin(full, ranges).requirement[0] == pytest.approx(0.0, abs=1e-9 * qty * scan)


def test_underlyings_scan_separately_unless_the_whole_portfolio_is_asked_for():
    # Long 1 BTC (range 3,000) and short 20 ETH (range 150): same-direction scenarios offset
    # exactly in one portfolio array (3,000 - 20 * 150 = 0), but SPAN scans each underlying
    # and adds the worst losses: 3,000 + 3,000.
    b = book(instruments(), {"a": (50_000.0, [("BTCUSDT", 1.0, 60_000.0), ("ETHUSDT", -20.0, 3_000.0)])}, PRICES)
    ranges = np.array([3_000.0, 3_000.0, 150.0])
    by_underlying = scenario_margin(b, ranges)
    assert by_underlying.requirement[0] == pytest.approx(6_000.0, rel=1e-12)
    assert np.abs(by_underlying.risk_array[0]).max() == pytest.approx(0.0, abs=1e-9)
    whole = scenario_margin(b, ranges, scan_by="portfolio")
    assert whole.requirement[0] == pytest.approx(0.0, abs=1e-9)
    assert whole.requirement[0] == pytest.approx(max(0.0, whole.risk_array[0].max()), abs=1e-12)


def test_default_scan_range_by_hand():
    # 60,000 * 2.3263 * 3% * sqrt(1) = 4,187.43
    assert scan_ranges(np.array([60_000.0]), np.array([0.03]), 0.99, 1.0)[0] == pytest.approx(4_187.43, abs=0.01)


def test_an_unknown_scan_range_only_blanks_the_accounts_that_hold_it():
    b = book(
        instruments(),
        {
            "btc": (50_000.0, [("BTCUSDT", 1.0, 60_000.0)]),
            "eth": (50_000.0, [("ETHUSDT", 1.0, 3_000.0)]),
            "none": (1.0, []),
        },
        PRICES,
    )
    r = scenario_margin(b, np.array([3_000.0, np.nan, np.nan]))
    assert r.requirement[0] == pytest.approx(3_000.0)
    assert np.isnan(r.requirement[1]) and np.isnan(r.risk_array[1]).all()
    assert r.requirement[2] == 0.0 and np.all(r.risk_array[2] == 0.0)
