"""The price gate: bad prints never reach the book; real gaps are believed once confirmed."""

import numpy as np

from engine.ladder import DataState
from engine.quality import DataQualityConfig, PriceGate, account_state


def feed(gate, mark, price, inst=0):
    ok = gate.screen(np.array([inst]), np.array([price]), mark)
    if ok[0]:
        mark[inst] = price
    return bool(ok[0])


def test_a_single_bad_print_is_held_and_dropped_when_prices_come_back():
    gate = PriceGate(1, DataQualityConfig(sanity_band=0.25, confirmations=2))
    mark = np.array([100.0])
    assert not feed(gate, mark, 10.0)  # a 90% drop in one print
    assert gate.instrument_state(0.0, mark, np.array([0.0]))[0] == DataState.INVALID
    assert feed(gate, mark, 101.0)
    assert mark[0] == 101.0
    assert gate.instrument_state(0.0, mark, np.array([0.0]))[0] == DataState.OK


def test_a_real_gap_is_accepted_after_two_confirming_prints():
    gate = PriceGate(1, DataQualityConfig(sanity_band=0.25, confirmations=2))
    mark = np.array([100.0])
    assert not feed(gate, mark, 60.0)
    assert not feed(gate, mark, 61.0)
    assert feed(gate, mark, 60.5)
    assert mark[0] == 60.5
    assert not gate.jumped[0]


def test_non_finite_zero_and_negative_prints_are_refused_and_counted():
    gate = PriceGate(1, DataQualityConfig())
    mark = np.array([100.0])
    for bad in (np.nan, np.inf, 0.0, -5.0):
        assert not feed(gate, mark, bad)
    assert mark[0] == 100.0
    assert gate.rejected[0] == 4


def test_a_mark_older_than_max_age_is_stale_and_a_missing_one_invalid():
    gate = PriceGate(2, DataQualityConfig(max_age=5.0))
    mark = np.array([100.0, np.nan])
    state = gate.instrument_state(10.0, mark, np.array([4.0, np.nan]))
    assert list(state) == [DataState.STALE, DataState.INVALID]
    assert gate.instrument_state(10.0, mark, np.array([5.0, 10.0]))[0] == DataState.OK


def test_an_account_takes_the_worst_state_of_what_it_holds():
    inst_state = np.array([0, 1, 2], dtype=np.int8)
    pos_instrument = np.array([0, 1, 0, 2, 0])
    # account 0 holds 0,1; account 1 holds 0,2; account 2 holds 0; account 3 holds nothing
    seg_starts, nonempty = np.array([0, 2, 4]), np.array([0, 1, 2])
    assert list(account_state(inst_state, pos_instrument, seg_starts, nonempty, 4)) == [1, 2, 0, 0]
