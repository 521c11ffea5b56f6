"""Deleverage plans: the smallest reduction back to the target, bracket-aware, venue-sendable."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.actions.deleverage import DeleverageParams, Plan, cheapest_step, plan_deleverage
from engine.actions.impact import ImpactModel
from engine.book import Book
from tests.engine.actions.support import MARKS, make_book, position, qty_of

FREE = DeleverageParams(impact=ImpactModel(k=0.0, taker_fee=0.0))


def apply_plan(make: Callable[[], Book], plan: Plan) -> Book:
    """A fresh copy of the book (built again: a Book holds views, so no deepcopy) with every
    planned order filled at its estimated price and fee."""
    out = make()
    for o in plan.orders:
        out.apply_fill(o.position, o.side * o.qty, o.est_price, o.est_fee)
    return out


def hand_book() -> Book:
    # BTCUSDT 6 @ 50,000 = 300,000 notional: tier 3 (floor 250k, mmr 1.0%, cum 1,300)
    #   maintenance margin = 300,000 * 0.010 - 1,300 = 1,700
    # ETHUSDT 100 @ 2,000 = 200,000 notional: tier 2 (floor 50k, mmr 0.65%, cum 75)
    #   maintenance margin = 200,000 * 0.0065 - 75 = 1,225
    # total maintenance margin 2,925; entries at the mark, so equity = wallet = 3,622.5
    # ratio = 3,622.5 / 2,925 = 1.2385
    return make_book([position("BTCUSDT", 6.0), position("ETHUSDT", 100.0)], wallet=3_622.5)


def three_positions() -> Book:
    return make_book(
        [position("BTCUSDT", 9.0), position("ETHUSDT", -180.0), position("SOLUSDT", 1_500.0)], wallet=9_000.0
    )


def test_hand_computed_one_tier_drop_beats_a_proportional_cut():
    book = hand_book()
    assert book.acct_mm[0] == pytest.approx(2_925.0)
    assert book.ratio[0] == pytest.approx(3_622.5 / 2_925.0)
    # Target 1.5 (frictionless): maintenance margin must fall to 3,622.5 / 1.5 = 2,415, i.e. by 510.
    #
    # risk: BTCUSDT holds the most margin (1,700 > 1,225), so it goes first. Down to 250,000 it is
    #   in tier 3 and margin falls 1.0% of the notional cut: 50,000 -> 500 (margin 1,200 at 250k).
    #   Below 250,000 it is in tier 2 (0.5%, cum 50): 10 more needs 10 / 0.005 = 2,000 notional.
    #   Cut 52,000 (1.04 BTC): margin 248,000 * 0.005 - 50 = 1,190; total 1,190 + 1,225 = 2,415.
    # proportional: a cut f of both, both staying in their tiers, lowers margin by
    #   f * (300,000 * 0.010 + 200,000 * 0.0065) = 4,300 f; 4,300 f = 510 -> f = 0.11860,
    #   notional 500,000 f = 59,302 (BTC 0.712, ETH 11.851 after rounding up to the 0.001 lot).
    risk = plan_deleverage(book, 0, target_ratio=1.5, strategy="risk", params=FREE)
    prop = plan_deleverage(book, 0, target_ratio=1.5, strategy="proportional", params=FREE)

    assert [(o.symbol, o.side) for o in risk.orders] == [("BTCUSDT", -1)]
    assert risk.orders[0].qty == pytest.approx(1.04)
    assert risk.reduced_notional == pytest.approx(52_000.0)
    assert risk.projected_maintenance_margin == pytest.approx(2_415.0)
    assert risk.projected_ratio == pytest.approx(1.5)
    assert "drops BTCUSDT from tier 3 (1.0%) to tier 2 (0.5%)" in risk.notes

    assert {o.symbol: o.qty for o in prop.orders} == pytest.approx({"BTCUSDT": 0.712, "ETHUSDT": 11.851})
    assert prop.reduced_notional == pytest.approx(59_302.0)
    assert risk.reduced_notional < prop.reduced_notional
    assert prop.projected_ratio >= 1.5


def test_costs_make_the_plan_larger_than_the_frictionless_one():
    book = hand_book()
    free = plan_deleverage(book, 0, target_ratio=1.5, params=FREE)
    costly = plan_deleverage(book, 0, target_ratio=1.5)
    assert costly.reduced_notional > free.reduced_notional
    # Equity after = equity - estimated slippage - fees, and the plan still makes the target.
    assert costly.projected_equity == pytest.approx(3_622.5 - costly.est_cost)
    assert costly.projected_ratio >= 1.5


@pytest.mark.parametrize("strategy", ["risk", "proportional", "time", "market"])
@pytest.mark.parametrize("method", ["market", "limit", "twap"])
def test_a_frictionless_plan_restores_the_target_on_a_copy_of_the_book(strategy, method):
    book = three_positions()
    assert book.ratio[0] < 1.8
    plan = plan_deleverage(book, 0, target_ratio=1.8, strategy=strategy, method=method, params=FREE)
    assert plan.orders and plan.projected_ratio >= 1.8
    after = apply_plan(three_positions, plan)
    assert after.ratio[0] >= 1.8 * (1 - 1e-9)
    assert after.ratio[0] == pytest.approx(plan.projected_ratio, rel=1e-9)


@pytest.mark.parametrize("strategy", ["risk", "proportional", "time", "market"])
def test_with_costs_the_projection_is_what_the_fills_at_estimated_prices_give(strategy):
    book = three_positions()
    params = DeleverageParams(impact=ImpactModel(k=3.0, taker_fee=0.001))
    plan = plan_deleverage(book, 0, target_ratio=1.8, strategy=strategy, params=params)
    after = apply_plan(three_positions, plan)
    assert after.equity[0] == pytest.approx(plan.projected_equity, rel=1e-9)
    assert after.ratio[0] == pytest.approx(plan.projected_ratio, rel=1e-9)
    assert after.ratio[0] >= 1.8


def test_isolated_account_projection_matches_the_book():
    def make() -> Book:
        positions = [
            position("BTCUSDT", 6.0).model_copy(update={"isolated_margin": 2_000.0}),
            position("ETHUSDT", -100.0).model_copy(update={"isolated_margin": 1_500.0}),
        ]
        return make_book(positions, wallet=10_000.0, margin_mode="isolated")

    book = make()
    before = float(book.ratio[0])
    plan = plan_deleverage(book, 0, target_ratio=before * 1.05, params=FREE)
    after = apply_plan(make, plan)
    assert after.ratio[0] == pytest.approx(plan.projected_ratio, rel=1e-9)
    assert after.ratio[0] >= before * 1.05


def test_reductions_are_rounded_up_to_the_lot_and_never_beyond_the_position():
    book = make_book([position("SOLUSDT", 333.0), position("BTCUSDT", 0.5)], wallet=650.0)
    for strategy in ("risk", "proportional", "time", "market"):
        plan = plan_deleverage(book, 0, target_ratio=2.0, strategy=strategy, params=FREE)
        for o in plan.orders:
            lot = 1.0 if o.symbol == "SOLUSDT" else 0.001
            held = abs(qty_of(book, o.symbol))
            assert o.qty <= held
            assert o.qty == held or abs(o.qty / lot - round(o.qty / lot)) < 1e-6, (strategy, o)
    # Fraction 0.1 of every position: SOL 33.3 -> 34 (up to the lot), BTC 0.05 stays 0.05.
    plan = plan_deleverage(book, 0, fraction=0.1, strategy="proportional", params=FREE)
    assert {o.symbol: o.qty for o in plan.orders} == pytest.approx({"SOLUSDT": 34.0, "BTCUSDT": 0.05})


def test_small_reductions_are_raised_to_min_notional_and_dust_is_closed():
    # BTCUSDT min notional 100 = 0.002 BTC at 50,000: a target needing a hair of reduction gets 0.002.
    book = make_book([position("BTCUSDT", 2.0)], wallet=1_000.0)  # mm 100,000 * 0.005 - 50 = 450
    ratio = float(book.ratio[0])
    plan = plan_deleverage(book, 0, target_ratio=ratio * 1.0001, params=FREE)
    assert [o.qty for o in plan.orders] == pytest.approx([0.002])
    # A position of 0.0035 BTC (175 notional): cutting the 0.002 minimum would leave 75 < 100: close it all.
    book = make_book([position("BTCUSDT", 0.0035), position("ETHUSDT", 10.0)], wallet=200.0)
    plan = plan_deleverage(book, 0, fraction=0.5, strategy="proportional", params=FREE)
    assert {o.symbol: o.qty for o in plan.orders}["BTCUSDT"] == pytest.approx(0.0035)


def test_liquidate_last_positions_are_touched_only_when_nothing_else_is_enough():
    # BTCUSDT holds by far the most margin but is flagged liquidate_last.
    btc = position("BTCUSDT", 20.0, last=True)  # 1,000,000: mm 10,000 - 1,300 = 8,700
    eth = position("ETHUSDT", 100.0)  # 200,000: mm 1,225
    book = make_book([btc, eth], wallet=12_000.0)  # ratio 12,000 / 9,925 = 1.209
    plan = plan_deleverage(book, 0, target_ratio=1.3, params=FREE)
    # 12,000 / 1.3 = 9,230.8: ETH alone can lower the margin by up to 1,225 -> 8,700 < 9,230.8.
    assert [o.symbol for o in plan.orders] == ["ETHUSDT"]
    assert not any("liquidate-last" in n for n in plan.notes)
    # A target ETH cannot reach: ETH closes first, then BTC.
    plan = plan_deleverage(book, 0, target_ratio=1.6, params=FREE)
    assert [o.symbol for o in plan.orders] == ["ETHUSDT", "BTCUSDT"]
    assert plan.orders[0].qty == pytest.approx(100.0)
    assert any("liquidate-last BTCUSDT" in n for n in plan.notes)
    # Proportional: the flagged position waits too.
    plan = plan_deleverage(book, 0, target_ratio=1.3, strategy="proportional", params=FREE)
    assert [o.symbol for o in plan.orders] == ["ETHUSDT"]


def test_cheapest_step_picks_the_single_position_with_the_smallest_notional():
    book = hand_book()
    step = cheapest_step(book, 0, 1.5, params=FREE)
    assert step is not None
    assert [(o.symbol, o.qty) for o in step.orders] == [("BTCUSDT", pytest.approx(1.04))]
    assert step.projected_ratio >= 1.5
    # ETH alone: 200,000 -> margin must fall 510 in tier 2 (0.65%): 78,462 notional, more than BTC's 52,000.
    eth_only = make_book([position("ETHUSDT", 100.0)], wallet=1_225.0 * 1.3)
    step = cheapest_step(eth_only, 0, 1.5, params=FREE)
    assert step is not None and step.orders[0].symbol == "ETHUSDT"
    # Already at the target: a plan with nothing to send.
    assert cheapest_step(hand_book(), 0, 1.1, params=FREE).orders == []


def test_time_strategy_slices_the_risk_plan_and_asks_for_a_recheck():
    book = hand_book()
    params = DeleverageParams(impact=ImpactModel(k=0.0, taker_fee=0.0), slices=4, slice_interval_s=20.0)
    plan = plan_deleverage(book, 0, target_ratio=1.5, strategy="time", params=params)
    assert plan.recheck
    assert [(o.symbol, o.slice, o.delay_s) for o in plan.orders] == [
        ("BTCUSDT", 0, 0.0),
        ("BTCUSDT", 1, 20.0),
        ("BTCUSDT", 2, 20.0),
        ("BTCUSDT", 3, 20.0),
    ]
    assert sum(o.qty for o in plan.orders) == pytest.approx(1.04)


def test_market_strategy_goes_liquid_first_and_caps_each_slice_at_participation():
    # THINUSDT (depth 1,000,000) and BTCUSDT (depth 60,000,000), 300,000 notional each.
    book = make_book([position("THINUSDT", 30_000.0), position("BTCUSDT", 6.0)], wallet=20_000.0)
    params = DeleverageParams(impact=ImpactModel(k=0.0, taker_fee=0.0), participation=0.01, slice_interval_s=5.0)
    # 80% of the 600,000 gross: all of BTC (most liquid) first, then 180,000 of THIN in slices of at
    # most 1% of its depth (10,000): 18 slices, 5 s apart.
    plan = plan_deleverage(book, 0, fraction=0.8, strategy="market", params=params)
    assert plan.orders[0].symbol == "BTCUSDT" and plan.orders[0].qty == pytest.approx(6.0)
    thin = [o for o in plan.orders if o.symbol == "THINUSDT"]
    assert len(thin) == 18 and sum(o.notional for o in thin) == pytest.approx(180_000.0)
    assert all(o.notional <= 10_000.0 + 1e-6 for o in thin)
    assert [o.slice for o in thin] == list(range(18))
    assert [o.delay_s for o in thin] == [0.0] + [5.0] * 17


def test_fraction_of_gross_notional_for_the_risk_strategy():
    book = hand_book()
    plan = plan_deleverage(book, 0, fraction=0.2, params=FREE)  # 20% of 500,000 = 100,000
    assert plan.reduced_notional == pytest.approx(100_000.0)
    assert [o.symbol for o in plan.orders] == ["BTCUSDT"]  # largest margin first


def test_plan_is_json_and_round_trips():
    plan = plan_deleverage(hand_book(), 0, target_ratio=1.5, strategy="time", action_id="act-7")
    text = json.dumps(plan.to_dict(), allow_nan=False)
    back = Plan.from_dict(json.loads(text))
    assert back.action_id == "act-7" and back.to_dict() == plan.to_dict()
    liq_like = plan_deleverage(hand_book(), 0, fraction=1.0, params=FREE)
    d = liq_like.to_dict()
    assert d["projected_ratio"] is None and Plan.from_dict(d).projected_ratio == math.inf


def test_nothing_to_do_when_already_at_the_target_and_bad_arguments_are_refused():
    plan = plan_deleverage(hand_book(), 0, target_ratio=1.1)
    assert plan.orders == [] and "already" in plan.notes[0]
    with pytest.raises(ValueError):
        plan_deleverage(hand_book(), 0)
    with pytest.raises(ValueError):
        plan_deleverage(hand_book(), 0, target_ratio=1.5, fraction=0.1)
    with pytest.raises(ValueError):
        plan_deleverage(hand_book(), 0, target_ratio=1.5, strategy="fastest")  # type: ignore[arg-type]


SYMBOLS = list(MARKS)


@st.composite
def books(draw):
    n = draw(st.integers(1, 4))
    symbols = draw(st.lists(st.sampled_from(SYMBOLS), min_size=n, max_size=n, unique=True))
    positions = []
    gross_mm = 0.0
    for s in symbols:
        notional = draw(st.floats(200.0, 3_000_000.0))
        qty = notional / MARKS[s]
        qty = round(qty, 3) if s in ("BTCUSDT", "ETHUSDT") else float(max(1, round(qty)))
        side = draw(st.sampled_from([1.0, -1.0]))
        positions.append(position(s, side * qty, last=draw(st.booleans())))
        gross_mm += notional * 0.02
    wallet = draw(st.floats(0.3, 3.0)) * gross_mm
    marks = {s: MARKS[s] * draw(st.floats(0.8, 1.2)) for s in SYMBOLS}
    return make_book(positions, wallet=wallet, marks=marks)


@settings(max_examples=60, deadline=None)
@given(
    book=books(),
    strategy=st.sampled_from(["proportional", "risk", "time", "market"]),
    method=st.sampled_from(["market", "limit", "stop", "twap"]),
    target=st.one_of(st.none(), st.floats(1.05, 4.0)),
    fraction=st.floats(0.01, 1.0),
    k=st.floats(0.0, 5.0),
)
def test_no_planned_order_ever_increases_exposure(book, strategy, method, target, fraction, k):
    params = DeleverageParams(impact=ImpactModel(k=k))
    if target is None:
        plan = plan_deleverage(book, 0, fraction=fraction, strategy=strategy, method=method, params=params)
    else:
        plan = plan_deleverage(book, 0, target_ratio=target, strategy=strategy, method=method, params=params)
    qty = book.pos_qty.copy()
    for o in plan.orders:
        before = qty[o.position]
        assert o.reduce_only and o.qty > 0
        assert o.side == -np.sign(before)
        after = before + o.side * o.qty
        assert abs(after) <= abs(before) * (1 + 1e-12)
        assert after == 0 or np.sign(after) == np.sign(before)
        qty[o.position] = 0.0 if abs(after) <= abs(before) * 1e-12 else after
    if target is not None and plan.orders:
        # Reached, after costs, unless closing everything is what it took.
        assert plan.projected_ratio >= target * (1 - 1e-9) or np.all(qty == 0)
