"""Liquidation plans: everything closed, reduce-only, hedges together first, in priority order."""

from __future__ import annotations

import json

import pytest

from engine.actions.impact import ImpactModel
from engine.actions.liquidate import LiquidationParams, plan_liquidation
from tests.engine.actions.support import make_book, position


def mixed_book():
    # SOL 200,000 notional (alt tier 3, derived cum 2,875): margin 0.05 * 200,000 - 2,875 = 7,125;
    # BTC 300,000 long: 1,700; ETH 100,000 short: 575. BTC opened first, SOL last.
    return make_book(
        [
            position("BTCUSDT", 6.0, day=1),
            position("ETHUSDT", -50.0, day=3),
            position("SOLUSDT", 2_000.0, day=5),
        ],
        wallet=12_000.0,
    )


def test_immediate_closes_every_position_with_reduce_only_market_orders():
    book = make_book([position("BTCUSDT", 6.0), position("SOLUSDT", -300.0)], wallet=5_000.0)
    plan = plan_liquidation(book, 0, mode="immediate", params=LiquidationParams(hedge_by="underlying"))
    assert plan.kind == "liquidate" and plan.method == "immediate"
    assert {(o.symbol, o.side, o.qty, o.order_type, o.reduce_only) for o in plan.orders} == {
        ("BTCUSDT", -1, 6.0, "market", True),
        ("SOLUSDT", 1, 300.0, "market", True),
    }
    assert all(o.slice == 0 and o.delay_s == 0 for o in plan.orders)
    assert plan.projected_maintenance_margin == 0 and plan.projected_ratio == float("inf")
    assert plan.projected_equity == pytest.approx(5_000.0 - plan.est_cost)
    json.dumps(plan.to_dict(), allow_nan=False)


def test_immediate_ioc_uses_a_wide_limit_through_the_mark():
    book = make_book([position("BTCUSDT", 6.0)], wallet=5_000.0)
    plan = plan_liquidation(book, 0, params=LiquidationParams(immediate_order_type="ioc", immediate_ioc_offset=0.03))
    (o,) = plan.orders
    assert o.order_type == "ioc" and o.limit_price == pytest.approx(50_000.0 * 0.97)


@pytest.mark.parametrize(
    ("priority", "expected"),
    [
        ("risk", ["SOLUSDT", "BTCUSDT", "ETHUSDT"]),  # maintenance margin, largest first
        ("size", ["BTCUSDT", "SOLUSDT", "ETHUSDT"]),  # notional: 300k, 200k, 100k
        ("market", ["BTCUSDT", "ETHUSDT", "SOLUSDT"]),  # depth: 60M, 30M, 6M
        ("time", ["BTCUSDT", "ETHUSDT", "SOLUSDT"]),  # oldest first
    ],
)
def test_priority_orders(priority, expected):
    book = mixed_book()
    # No hedged pair here: hedges are matched by underlying (BTC long and ETH short differ).
    plan = plan_liquidation(book, 0, priority=priority, params=LiquidationParams(hedge_by="underlying"))
    assert [o.symbol for o in plan.orders] == expected


def test_time_priority_puts_positions_of_unknown_age_last():
    book = make_book(
        [position("BTCUSDT", 1.0, day=9), position("ETHUSDT", 10.0).model_copy(update={"opened": None})],
        wallet=5_000.0,
    )
    plan = plan_liquidation(book, 0, priority="time")
    assert [o.symbol for o in plan.orders] == ["BTCUSDT", "ETHUSDT"]


def test_hedged_pair_is_closed_together_first():
    # BTC long and ETH short share the group "majors": a hedged pair, closed first even though
    # SOL holds the most margin (risk priority would start with SOL).
    book = mixed_book()
    plan = plan_liquidation(book, 0, priority="risk")
    assert [o.symbol for o in plan.orders] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert any("hedged BTCUSDT/ETHUSDT (group majors) together first" in n for n in plan.notes)
    # Orderly: both legs get the same number of slices, so the pair shrinks in step.
    params = LiquidationParams(max_slice_slippage=0.0005)  # slices of 0.25% of depth
    plan = plan_liquidation(book, 0, mode="orderly", priority="risk", params=params)
    btc = [o for o in plan.orders if o.symbol == "BTCUSDT"]
    eth = [o for o in plan.orders if o.symbol == "ETHUSDT"]
    assert len(btc) == len(eth) > 1
    first_slice = [o.symbol for o in plan.orders if o.slice == 0]
    assert first_slice[:2] == ["BTCUSDT", "ETHUSDT"]


def test_liquidate_last_positions_go_last_and_are_not_paired():
    book = make_book(
        [position("BTCUSDT", 6.0, last=True), position("ETHUSDT", -50.0), position("SOLUSDT", 100.0)],
        wallet=12_000.0,
    )
    plan = plan_liquidation(book, 0, priority="size")
    assert [o.symbol for o in plan.orders] == ["ETHUSDT", "SOLUSDT", "BTCUSDT"]
    assert any("liquidate-last BTCUSDT" in n for n in plan.notes)
    assert not any("hedged" in n for n in plan.notes)


def test_orderly_slices_by_impact_with_widening_ioc_limits_and_a_deadline():
    # THINUSDT: depth 1,000,000 (from volume / 250); 100,000 notional is 10% of the depth.
    # A slice under 10 bps of estimated slippage: 0.01 * sqrt(n / 1e6) <= 0.001 -> n <= 10,000.
    book = make_book([position("THINUSDT", 10_000.0)], wallet=20_000.0)
    params = LiquidationParams(max_slice_slippage=0.001, slice_interval_s=10.0, deadline_s=120.0)
    plan = plan_liquidation(book, 0, mode="orderly", params=params)
    assert len(plan.orders) == 10
    assert all(o.qty == 1_000.0 and o.order_type == "ioc" for o in plan.orders)
    assert all(o.est_slippage / o.notional == pytest.approx(0.001) for o in plan.orders)
    assert [o.slice for o in plan.orders] == list(range(10))
    assert [o.delay_s for o in plan.orders] == [0.0] + [10.0] * 9
    offsets = [o.limit_offset for o in plan.orders]
    assert offsets == sorted(offsets) and offsets[-1] > offsets[0]
    assert all(o.limit_price < o.mark for o in plan.orders)  # selling: limits below the mark
    assert plan.deadline_s == 120.0
    # Immediate pays the square-root impact of the whole size: sqrt(10) times the slice rate.
    immediate = plan_liquidation(book, 0, mode="immediate", params=params)
    assert immediate.orders[0].est_slippage == pytest.approx(100_000 * 0.01 * (0.1**0.5))
    assert sum(o.est_slippage for o in plan.orders) < immediate.orders[0].est_slippage


def test_participation_caps_slices_too_and_max_slices_bounds_them():
    book = make_book([position("THINUSDT", 10_000.0)], wallet=20_000.0)
    params = LiquidationParams(max_slice_slippage=0.01, participation=0.02, impact=ImpactModel())
    assert len(plan_liquidation(book, 0, mode="orderly", params=params).orders) == 5  # 20,000 per slice
    params = LiquidationParams(max_slice_slippage=0.0001, max_slices=4)
    assert len(plan_liquidation(book, 0, mode="orderly", params=params).orders) == 4
