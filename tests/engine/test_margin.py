"""Bracket tables and the pure margin math (engine.model brackets, engine.margin).

Expected numbers are worked out by hand in the comments, never by calling the engine.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine import margin
from engine.model import Bracket, InputError, Instrument, resolve_brackets

# Binance USD-M BTCUSDT leverage brackets (notional floor, maintenance margin rate, max leverage).
# Binance publishes cum ("maintenance amount") 0, 50, 1300, 16300, 266300, 1266300, 2516300,
# 5016300, 25016300, 100016300 for them.
BTC_TIERS = [
    (0, 0.004, 125),
    (50_000, 0.005, 100),
    (250_000, 0.01, 50),
    (1_000_000, 0.025, 20),
    (10_000_000, 0.05, 10),
    (20_000_000, 0.1, 5),
    (50_000_000, 0.125, 4),
    (100_000_000, 0.15, 3),
    (200_000_000, 0.25, 2),
    (300_000_000, 0.5, 1),
]


def btc(**extra) -> Instrument:
    brackets = [{"floor": f, "mmr": m, "max_leverage": lev} for f, m, lev in BTC_TIERS]
    return Instrument(symbol="BTCUSDT", brackets=brackets, **extra)


# ---------------------------------------------------------------------------- bracket tables
def test_btcusdt_cum_is_derived_as_binance_publishes_it():
    # cum_n = floor_n * (mmr_n - mmr_{n-1}) + cum_{n-1}
    #   50_000 * (0.005 - 0.004)   + 0          = 50
    #   250_000 * (0.01 - 0.005)   + 50         = 1_300
    #   1_000_000 * (0.025 - 0.01) + 1_300      = 16_300
    #   10_000_000 * (0.05 - 0.025) + 16_300    = 266_300
    #   20_000_000 * (0.1 - 0.05) + 266_300     = 1_266_300
    #   50_000_000 * (0.125 - 0.1) + 1_266_300  = 2_516_300
    #   100_000_000 * (0.15 - 0.125) + 2_516_300 = 5_016_300
    #   200_000_000 * (0.25 - 0.15) + 5_016_300 = 25_016_300
    #   300_000_000 * (0.5 - 0.25) + 25_016_300 = 100_016_300
    expected = [0, 50, 1_300, 16_300, 266_300, 1_266_300, 2_516_300, 5_016_300, 25_016_300, 100_016_300]
    got = [b.maintenance_amount for b in btc().brackets]
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-9)


def test_btcusdt_caps_are_the_next_floor_and_the_last_is_open():
    brackets = btc().brackets
    assert [b.cap for b in brackets[:-1]] == [f for f, _, _ in BTC_TIERS[1:]]
    assert brackets[-1].cap is None


def test_btcusdt_maintenance_margin_is_continuous_at_every_floor():
    # At each floor F the lower tier gives F*mmr_{n-1} - cum_{n-1} and the upper F*mmr_n - cum_n:
    #   50_000:  200 - 0 = 200            and 250 - 50 = 200
    #   1e6:     10_000 - 1_300 = 8_700   and 25_000 - 16_300 = 8_700
    #   3e8:     75e6 - 25_016_300 = 49_983_700 and 150e6 - 100_016_300 = 49_983_700
    brackets = btc().brackets
    for lower, upper in itertools.pairwise(brackets):
        f = upper.floor
        below = f * lower.mmr - lower.maintenance_amount
        at = f * upper.mmr - upper.maintenance_amount
        assert at == pytest.approx(below, rel=1e-12)
    assert 1e6 * brackets[3].mmr - brackets[3].maintenance_amount == pytest.approx(8_700)
    assert 3e8 * brackets[9].mmr - brackets[9].maintenance_amount == pytest.approx(49_983_700)


def test_a_stated_maintenance_amount_is_kept():
    inst = Instrument(
        symbol="X",
        brackets=[{"floor": 0, "mmr": 0.01}, {"floor": 1000, "mmr": 0.02, "maintenance_amount": 12.5}],
    )
    assert inst.brackets[1].maintenance_amount == 12.5


def test_a_notional_above_the_stated_last_cap_stays_in_the_last_tier():
    # Binance states a cap on its last tier (BTC: 500_000_000). A notional above it must stay in
    # that tier, not walk into the next instrument's brackets in the flat table.
    capped = [{"floor": f, "mmr": m, "max_leverage": lev} for f, m, lev in BTC_TIERS]
    capped[-1]["cap"] = 500_000_000
    other = Instrument(symbol="ETHUSDT", brackets=[{"floor": 0, "mmr": 0.3}])
    table = margin.BracketTable.from_instruments([Instrument(symbol="BTCUSDT", brackets=capped), other])
    assert math.isinf(table.cap[9])
    # 600e6 of notional, starting from tier 0: 9 steps up and no further.
    b = margin.walk_brackets(np.array([6e8]), np.array([0]), table)
    assert b.tolist() == [9]
    # MM = 6e8 * 0.5 - 100_016_300 = 199_983_700
    v = margin.value_positions(
        np.array([10_000.0]), np.array([60_000.0]), np.array([1.0]), np.array([60_000.0]), np.array([0]), table
    )
    assert v.maintenance_margin[0] == pytest.approx(199_983_700)


def test_walk_and_lookup_find_the_tier_holding_each_notional():
    table = margin.BracketTable.from_instruments([btc()])
    notional = np.array([0.0, 49_999.99, 50_000.0, 250_000.0, 999_999.0, 1e6, 4e8, 1e12])
    want = [0, 0, 1, 2, 2, 3, 9, 9]  # a floor belongs to its own tier
    assert margin.walk_brackets(notional, np.full(8, 5), table).tolist() == want
    assert margin.lookup_brackets(notional, np.zeros(8, dtype=np.int64), table).tolist() == want


def test_margin_ratio_is_infinite_without_margin_and_unknown_when_unpriced():
    got = margin.margin_ratio(np.array([10_500.0, 1_000.0, 5.0]), np.array([122.0, 0.0, np.nan]))
    # 10_500 / 122 = 86.0655737704918
    assert got[0] == pytest.approx(86.0655737704918)
    assert math.isinf(got[1]) and got[1] > 0
    assert math.isnan(got[2])


# ---------------------------------------------------------------------------- refusals
def _refused(brackets, fragment):
    with pytest.raises(ValidationError) as exc:
        Instrument(symbol="BTCUSDT", brackets=brackets)
    assert "instrument BTCUSDT" in str(exc.value)
    assert fragment in str(exc.value)
    with pytest.raises(InputError, match="instrument BTCUSDT"):
        resolve_brackets("BTCUSDT", [Bracket(**b) for b in brackets])


def test_unsorted_brackets_are_refused():
    _refused([{"floor": 0, "mmr": 0.01}, {"floor": 5000, "mmr": 0.02}, {"floor": 1000, "mmr": 0.03}], "sorted")


def test_overlapping_brackets_are_refused():
    _refused([{"floor": 0, "cap": 2000, "mmr": 0.01}, {"floor": 1000, "mmr": 0.02}], "overlaps")


def test_gapped_brackets_are_refused():
    _refused([{"floor": 0, "cap": 500, "mmr": 0.01}, {"floor": 1000, "mmr": 0.02}], "gap")


def test_a_first_floor_other_than_zero_is_refused():
    _refused([{"floor": 100, "mmr": 0.01}, {"floor": 1000, "mmr": 0.02}], "floor 0")


def test_an_empty_bracket_table_is_refused():
    with pytest.raises(ValidationError, match="at least one"):
        Instrument(symbol="BTCUSDT", brackets=[])


@pytest.mark.parametrize("size", [0.0, -1.0, math.nan, math.inf])
def test_a_zero_negative_or_non_finite_contract_size_is_refused(size):
    with pytest.raises(ValidationError, match="contract_size"):
        btc(contract_size=size)


@pytest.mark.parametrize("field,value", [("mmr", math.nan), ("mmr", 1.0), ("mmr", -0.1), ("floor", math.inf)])
def test_impossible_bracket_values_are_refused(field, value):
    b = {"floor": 0, "mmr": 0.01, field: value}
    with pytest.raises(ValidationError, match=field):
        Bracket(**b)


# ---------------------------------------------------------------------------- properties
@st.composite
def tier_tables(draw):
    """1-10 tiers: floors from 0 rising by 10..1e7 a tier, rates rising (as on every venue)."""
    n = draw(st.integers(1, 10))
    steps = draw(st.lists(st.floats(10.0, 1e7), min_size=n - 1, max_size=n - 1))
    floors = [0.0, *np.cumsum(steps).tolist()]
    rate = draw(st.floats(0.0005, 0.05))
    rates = [rate]
    for _ in range(n - 1):
        rates.append(min(0.95, rates[-1] * draw(st.floats(1.01, 3.0))))
    return [{"floor": f, "mmr": m} for f, m in zip(floors, rates, strict=True)]


@settings(max_examples=100)
@given(tier_tables())
def test_derived_cum_keeps_maintenance_margin_continuous_at_every_boundary(brackets):
    inst = Instrument(symbol="X", brackets=brackets)
    table = margin.BracketTable.from_instruments([inst])
    floors = table.floor[1:]
    if not floors.size:
        return
    below = np.nextafter(floors, 0.0)  # the largest notional still in the lower tier
    n = np.concatenate([below, floors])
    b = margin.walk_brackets(n, np.zeros(n.size, dtype=np.int64), table)
    k = floors.size
    assert (b[:k] == np.arange(k)).all() and (b[k:] == np.arange(1, k + 1)).all()
    mm = n * table.mmr[b] - table.cum[b]
    # Just below vs at the floor: the same value to 1e-9 relative (plus the one-ulp step in notional).
    assert np.all(np.abs(mm[k:] - mm[:k]) <= 1e-9 * np.maximum(np.abs(mm[k:]), 1e-300) + floors * 1e-15)


@settings(max_examples=100)
@given(tier_tables(), st.lists(st.floats(0.0, 1e9), min_size=1, max_size=30), st.integers(0, 9))
def test_walking_from_any_cached_tier_finds_the_same_tier_as_a_lookup(brackets, notional, start):
    inst = Instrument(symbol="X", brackets=brackets)
    table = margin.BracketTable.from_instruments([inst])
    n = np.array(notional)
    guess = np.full(n.size, min(start, len(brackets) - 1))
    walked = margin.walk_brackets(n, guess, table)
    looked = margin.lookup_brackets(n, np.zeros(n.size, dtype=np.int64), table)
    assert walked.tolist() == looked.tolist()
    assert np.all(table.floor[walked] <= n) and np.all(n < table.cap[walked])


def test_liquidation_distance_is_signed_by_side_and_negative_once_past():
    from engine.margin import liquidation_distance_pct

    got = liquidation_distance_pct(
        np.array([0.5, 0.5, -2.0, -2.0, 1.0]),
        np.array([61_000.0, 50_000.0, 100.0, 100.0, 10.0]),
        np.array([40_160.64257028112, 55_000.0, 125.0, 80.0, np.nan]),
    )
    # long safe (+34.16), long past (-10), short safe (+25), short past (-20), no price (NaN)
    assert got[:4] == pytest.approx([(61_000 - 40_160.64257028112) / 610, -10.0, 25.0, -20.0])
    assert np.isnan(got[4])
