"""Look-ahead: an account's ratio and level after a hypothetical order fills."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.analytics.lookahead import look_ahead
from engine.model import InputError
from tests.engine.analytics.support import book, flat, tiered

PRICES = {"BTCUSDT": 60_000.0, "SOLUSDT": 150.0}


def demo_book():
    return book(
        [tiered("BTCUSDT"), flat("SOLUSDT")],
        {
            "cross": (2_000.0, [("BTCUSDT", 0.5, 59_000.0), ("SOLUSDT", -100.0, 155.0)]),
            "iso": (50_000.0, [("BTCUSDT", 1.0, 60_000.0)]),
        },
        PRICES,
        isolated={"iso": [1_000.0]},
    )


def test_a_buy_that_crosses_a_bracket_by_hand():
    # cross: equity 2,000 + 0.5 * 1,000 + 100 * 5 = 3,000; MM 30,000 * 0.004 + 15,000 * 0.01 = 270.
    # Buy 0.5 BTC at 60,100: BTC 1.0 at mark 60,000 -> notional 60,000 in tier 2: 60,000 * 0.005 - 50 = 250.
    # Equity moves by 0.5 * (60,000 - 60,100) = -50 -> 2,950; MM 250 + 150 = 400; ratio 7.375.
    r = look_ahead(demo_book(), "cross", "BTCUSDT", "buy", 0.5, 60_100.0)
    assert r.equity_before == pytest.approx(3_000.0) and r.maintenance_margin_before == pytest.approx(270.0)
    assert r.qty_after == 1.0
    assert r.equity_after == pytest.approx(2_950.0, rel=1e-12)
    assert r.maintenance_margin_after == pytest.approx(400.0, rel=1e-12)
    assert r.ratio_after == pytest.approx(2_950.0 / 400.0, rel=1e-12)
    assert (r.level_before, r.level_after) == ("SAFE", "SAFE")


def test_an_order_that_takes_the_account_into_critical():
    # Sell 1,200 SOL at the mark: short 1,300, MM 195,000 * 0.01 + 120 = 2,070; equity stays
    # 3,000: ratio 1.449 -> CRITICAL (1.2, 1.5].
    r = look_ahead(demo_book(), "cross", "SOLUSDT", "sell", 1_200.0, 150.0)
    assert r.ratio_after == pytest.approx(3_000.0 / 2_070.0, rel=1e-12)
    assert r.level_after == "CRITICAL"


def test_a_new_position_and_a_flip():
    b = demo_book()
    flip = look_ahead(b, "cross", "SOLUSDT", "buy", 150.0, 150.0, fee=3.0)
    # closes 100 short from 155 at 150: +500 realised, opens 50 long at 150; equity 3,000 - 3 (fee)
    assert flip.qty_after == 50.0 and flip.realized_pnl == pytest.approx(500.0)
    assert flip.equity_after == pytest.approx(2_997.0, rel=1e-12)
    assert flip.maintenance_margin_after == pytest.approx(120.0 + 7_500.0 * 0.01, rel=1e-12)
    b2 = book([tiered("BTCUSDT"), flat("SOLUSDT")], {"a": (1_000.0, [])}, PRICES)
    new = look_ahead(b2, "a", "SOLUSDT", "sell", 10.0, 151.0)
    # new short 10 at 151, valued at 150: equity 1,000 + 10 = 1,010; MM 1,500 * 0.01 = 15
    assert new.ratio_before == np.inf and new.ratio_after == pytest.approx(1_010.0 / 15.0, rel=1e-12)


@given(fraction=st.floats(0.01, 1.0), slip=st.floats(-0.002, 0.002))
def test_a_reducing_order_raises_the_ratio(fraction, slip):
    b = demo_book()
    # sell part of the BTC long, at most 0.2% away from the mark
    r = look_ahead(b, "cross", "BTCUSDT", "sell", 0.5 * fraction, 60_000.0 * (1 + slip))
    assert r.ratio_after > r.ratio_before
    # and cross equity moves by the traded units times (mark - fill price)
    assert r.equity_after - r.equity_before == pytest.approx(
        -0.5 * fraction * (60_000.0 - 60_000.0 * (1 + slip)), abs=1e-6
    )
    cover = look_ahead(b, "cross", "SOLUSDT", "buy", 100.0 * fraction, 150.0 * (1 + slip))
    assert cover.ratio_after > cover.ratio_before


def test_isolated_position_ratio_after_a_reduction_and_an_increase():
    b = demo_book()
    # iso: (1,000 + 0) / (60,000 * 0.005 - 50) = 4.0. Sell half: margin 500, MM 30,000 * 0.004 = 120 -> 4.1667
    half = look_ahead(b, "iso", "BTCUSDT", "sell", 0.5, 60_000.0)
    assert half.ratio_before == pytest.approx(4.0)
    assert half.ratio_after == pytest.approx(500.0 / 120.0, rel=1e-12)
    # buy 1 more at 60,000: posts 60,000 / 100 = 600 (tier 2 at 120,000); MM 120,000 * 0.005 - 50 = 550
    more = look_ahead(b, "iso", "BTCUSDT", "buy", 1.0, 60_000.0)
    assert more.ratio_after == pytest.approx(1_600.0 / 550.0, rel=1e-12)


def test_look_ahead_refuses_bad_orders():
    b = demo_book()
    with pytest.raises(InputError, match="unknown account"):
        look_ahead(b, "nobody", "BTCUSDT", "buy", 1.0, 60_000.0)
    with pytest.raises(InputError, match="unknown symbol"):
        look_ahead(b, "cross", "XRPUSDT", "buy", 1.0, 1.0)
    with pytest.raises(InputError, match="qty"):
        look_ahead(b, "cross", "BTCUSDT", "buy", 0.0, 60_000.0)
    with pytest.raises(InputError, match="price"):
        look_ahead(b, "cross", "BTCUSDT", "buy", 1.0, -5.0)
    with pytest.raises(InputError, match="side"):
        look_ahead(b, "cross", "BTCUSDT", "hold", 1.0, 60_000.0)
