"""Stress tests: shocked re-valuation, loss drivers, worst stressed ratio, scenario grids."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.analytics.maintenance import VolatilityAdjustment
from engine.analytics.revalue import value_at_marks
from engine.analytics.stress import (
    NAMED_SCENARIOS,
    StressScenario,
    instrument_shocks,
    scenario_grid,
    stress_ratio,
    stress_test,
)
from engine.levels import Level
from tests.engine.analytics.support import book, flat, tiered

PRICES = {"BTCUSDT": 60_000.0, "ETHUSDT": 3_000.0, "SOLUSDT": 150.0, "DOGEUSDT": 0.1}


def instruments():
    return [
        tiered("BTCUSDT", underlying="BTC", group="majors"),
        flat("ETHUSDT", mmr=0.005, leverage=100, underlying="ETH", group="majors"),
        flat("SOLUSDT", underlying="SOL", group="l1"),
        flat("DOGEUSDT", mmr=0.02, leverage=25, underlying="DOGE", group="meme"),
    ]


def demo_book():
    return book(
        instruments(),
        {
            "long": (20_000.0, [("BTCUSDT", 1.0, 58_000.0), ("ETHUSDT", 10.0, 3_100.0), ("SOLUSDT", 100.0, 150.0)]),
            "short": (30_000.0, [("BTCUSDT", -2.0, 61_000.0), ("DOGEUSDT", 100_000.0, 0.1)]),
            "iso": (40_000.0, [("ETHUSDT", 5.0, 3_000.0), ("SOLUSDT", -50.0, 150.0)]),
            "empty": (1_000.0, []),
        },
        PRICES,
        isolated={"iso": [1_500.0, 750.0]},
    )


def test_revaluing_at_unchanged_marks_reproduces_the_book():
    b = demo_book()
    v = value_at_marks(b, b.mark)
    assert v.equity.tolist() == b.equity.tolist()
    assert v.account_mm.tolist() == b.acct_mm.tolist()
    assert v.ratio.tolist() == b.ratio.tolist()
    assert v.level.tolist() == b.level.tolist()


@given(move=st.floats(-0.9, 2.0), wallet=st.floats(1_000.0, 1e7), q=st.floats(0.001, 100.0))
def test_a_ten_percent_fall_costs_a_long_only_account_ten_percent_of_its_notional(move, wallet, q):
    b = book(instruments(), {"long": (wallet, [("BTCUSDT", q, 55_000.0), ("SOLUSDT", 40 * q, 160.0)])}, PRICES)
    r = stress_test(b, StressScenario(name="down", moves={"*": -0.10}))
    long_notional = q * 60_000.0 + 40 * q * 150.0
    assert r.pnl[0] == pytest.approx(-0.10 * long_notional, rel=1e-12)
    assert r.equity[0] == pytest.approx(b.equity[0] - 0.10 * long_notional, rel=1e-12)
    # and any move m changes its equity by m * notional
    any_move = stress_test(b, StressScenario(name="m", moves={"*": move}))
    assert any_move.pnl[0] == pytest.approx(move * long_notional, rel=1e-9, abs=1e-9 * long_notional)


def test_the_most_specific_key_wins():
    moves = {"*": -0.3, "majors": -0.2, "ETH": -0.1, "BTCUSDT": 0.05}
    assert instrument_shocks(instruments(), moves).tolist() == [0.05, -0.1, -0.3, -0.3]
    assert instrument_shocks(instruments(), {"meme": 0.5}).tolist() == [0.0, 0.0, 0.0, 0.5]


def test_stress_figures_by_hand():
    b = demo_book()
    r = stress_test(b, StressScenario(name="crash", moves={"*": -0.2, "majors": -0.1}))
    # long: BTC 1 * -6,000, ETH 10 * -300, SOL 100 * -30 -> pnl -12,000
    assert r.pnl[0] == pytest.approx(-12_000.0, rel=1e-12)
    # equity 20,000 + 2,000 (BTC) - 1,000 (ETH) - 12,000 = 9,000; MM: BTC 54,000 * 0.005 - 50 = 220,
    # ETH 27,000 * 0.005 = 135, SOL 12,000 * 0.01 = 120 -> 475; ratio 18.947
    assert r.equity[0] == pytest.approx(9_000.0, rel=1e-12)
    assert r.maintenance_margin[0] == pytest.approx(475.0, rel=1e-12)
    assert r.ratio[0] == pytest.approx(9_000.0 / 475.0, rel=1e-12)
    # loss drivers, worst first: BTC (-6,000), then ETH and SOL (-3,000 each, in position order)
    assert r.drivers[0, 0] == 0 and sorted(r.drivers[0, 1:].tolist()) == [1, 2]
    # short gains on BTC (+12,000), loses 20% of 10,000 on DOGE: its only driver is DOGE
    assert r.pnl[1] == pytest.approx(12_000.0 - 2_000.0, rel=1e-12)
    assert r.drivers[1].tolist() == [4, -1, -1]
    assert r.drivers[3].tolist() == [-1, -1, -1] and r.pnl[3] == 0.0
    assert b.equity[0] == pytest.approx(20_000.0 + 2_000.0 - 1_000.0)  # the book is untouched


def test_isolated_accounts_take_their_weakest_position():
    b = demo_book()
    r = stress_test(b, StressScenario(name="eth down", moves={"ETHUSDT": -0.2}))
    # ETH leg: (1,500 + 5 * (2,400 - 3,000)) / (12,000 * 0.005) = -1,500 / 60 = -25
    assert r.ratio[2] == pytest.approx(-25.0, rel=1e-12)
    assert r.level[2] == Level.LIQUIDATION


def test_the_worst_ratio_across_scenarios():
    b = demo_book()
    worst, which = stress_ratio(b, NAMED_SCENARIOS)
    each = np.stack([stress_test(b, s).ratio for s in NAMED_SCENARIOS])
    assert worst.tolist() == each.min(axis=0).tolist()
    assert which.tolist() == np.argmin(each, axis=0).tolist()
    # the long book suffers most in the crash; the short BTC book in the broad +10% (BTC -12,000,
    # DOGE +1,000), more than in the squeeze (BTC -12,000, DOGE +4,000)
    assert [NAMED_SCENARIOS[k].name for k in which[:2]] == ["crypto crash", "market +10%"]


def test_volatility_shocks_move_no_pnl_but_do_move_a_volatility_adjusted_margin():
    b = demo_book()
    vol_only = StressScenario(name="vol", vol_shocks={"*": 1.0})
    plain = stress_test(b, vol_only)
    assert plain.pnl.tolist() == [0.0, 0.0, 0.0, 0.0]
    assert plain.ratio.tolist() == b.ratio.tolist()
    annual = np.full(4, 0.7)  # calm (<= 0.75); doubled, 1.4: stressed (> 1.2), MM x 1.5
    adjusted = stress_test(b, vol_only, annual_vol=annual, volatility=VolatilityAdjustment())
    assert adjusted.maintenance_margin[0] == pytest.approx(1.5 * b.acct_mm[0], rel=1e-12)
    assert adjusted.pnl[0] == 0.0


def test_scenario_grid_for_one_account():
    b = demo_book()
    g = scenario_grid(b, "long", price_moves=(-0.1, 0.0, 0.1), vol_shocks=(0.0, 1.0))
    assert g.ratio.shape == (3, 2)
    assert g.pnl[1].tolist() == [0.0, 0.0]
    assert g.ratio[1, 0] == b.ratio[0]
    # -10% everywhere: 1 * 6,000 + 10 * 300 + 100 * 15 = 10,500 lost
    assert g.pnl[0, 0] == pytest.approx(-10_500.0, rel=1e-12)
    assert g.pnl[2, 1] == pytest.approx(10_500.0, rel=1e-12)
    assert len(g.rows()) == 6 and g.rows()[0]["price_move"] == -0.1
    with_vol = scenario_grid(
        b, "long", (0.0,), (0.0, 1.0), annual_vol=np.full(4, 0.7), volatility=VolatilityAdjustment()
    )
    assert with_vol.ratio[0, 1] == pytest.approx(b.ratio[0] / 1.5, rel=1e-12)
