"""The ladder: immediate escalation, gaps in one step, hysteresis and dwell on the way back,
and no movement at all on bad data."""

import numpy as np

from engine.ladder import DataState, Ladder, LadderConfig, TradingState
from engine.levels import Level, classify

W, C, L = 2.0, 1.5, 1.2


def step(ladder, now, ratios):
    r = np.asarray(ratios, dtype=float)
    n = r.size
    w, c, liq = np.full(n, W), np.full(n, C), np.full(n, L)
    rl = classify(r, w, c, liq)
    rl[np.isnan(r)] = -1
    return ladder.step(now, r, rl, w, c, liq)


def test_crossing_warning_is_immediate_and_carries_ratio_thresholds_and_reason():
    lad = Ladder(1, LadderConfig(hysteresis=0.05, dwell=10))
    assert step(lad, 0.0, [2.5]) == []
    (t,) = step(lad, 1.0, [1.99])
    assert (t.from_level, t.to_level) == (Level.SAFE, Level.WARNING)
    assert t.ratio == 1.99 and (t.warning, t.critical, t.liquidation) == (W, C, L)
    assert "crossed WARNING" in t.reason


def test_a_value_exactly_on_a_threshold_is_the_more_severe_level():
    lad = Ladder(3, LadderConfig())
    ts = step(lad, 0.0, [2.0, 1.5, 1.2])
    assert [t.to_level for t in sorted(ts, key=lambda t: t.account)] == [
        Level.WARNING,
        Level.CRITICAL,
        Level.LIQUIDATION,
    ]


def test_a_gap_from_safe_goes_straight_to_liquidation_in_one_transition():
    lad = Ladder(1, LadderConfig())
    (t,) = step(lad, 0.0, [1.1])
    assert (t.from_level, t.to_level) == (Level.SAFE, Level.LIQUIDATION)
    assert "(gap)" in t.reason
    assert lad.level[0] == Level.LIQUIDATION


def test_stepping_back_needs_the_band_and_the_dwell():
    lad = Ladder(1, LadderConfig(hysteresis=0.05, dwell=10))
    step(lad, 0.0, [1.9])  # WARNING
    # Above 2.0 but inside the band: stays WARNING however long it holds.
    for t in range(1, 30):
        assert step(lad, float(t), [2.03]) == []
    # Above 2.05 from t=30: not before t=40.
    for t in range(30, 40):
        assert step(lad, float(t), [2.06]) == []
    (back,) = step(lad, 40.0, [2.06])
    assert (back.from_level, back.to_level) == (Level.WARNING, Level.SAFE)
    assert "held above WARNING threshold + 0.05 for 10s" in back.reason


def test_a_dip_during_the_dwell_restarts_the_timer():
    lad = Ladder(1, LadderConfig(hysteresis=0.05, dwell=10))
    step(lad, 0.0, [1.4])  # CRITICAL
    step(lad, 1.0, [1.6])  # qualifies for WARNING from t=1
    step(lad, 5.0, [1.52])  # back inside the band: timer reset
    step(lad, 6.0, [1.6])  # qualifies again from t=6
    assert step(lad, 12.0, [1.6]) == []
    (t,) = step(lad, 16.0, [1.6])
    assert t.to_level == Level.WARNING


def test_recovery_from_critical_to_safe_is_one_transition_when_the_ratio_is_well_above():
    lad = Ladder(1, LadderConfig(hysteresis=0.05, dwell=5))
    step(lad, 0.0, [1.3])
    step(lad, 1.0, [3.0])
    (t,) = step(lad, 6.0, [3.0])
    assert (t.from_level, t.to_level) == (Level.CRITICAL, Level.SAFE)


def test_stale_or_invalid_data_freezes_the_level_both_ways():
    lad = Ladder(2, LadderConfig(dwell=0))
    lad.data_state[:] = [DataState.STALE, DataState.INVALID]
    assert step(lad, 0.0, [1.0, 1.0]) == []
    assert list(lad.level) == [0, 0]
    lad.data_state[:] = DataState.OK
    assert len(step(lad, 1.0, [1.0, 1.0])) == 2


def test_an_unknown_ratio_never_moves_the_ladder():
    lad = Ladder(1, LadderConfig())
    assert step(lad, 0.0, [np.nan]) == []
    assert lad.level[0] == Level.SAFE


def test_transitions_come_most_severe_first():
    lad = Ladder(3, LadderConfig())
    ts = step(lad, 0.0, [1.9, 1.0, 1.4])
    assert [t.to_level for t in ts] == [Level.LIQUIDATION, Level.CRITICAL, Level.WARNING]


def test_trading_state_is_halted_over_reducing_over_active():
    lad = Ladder(3, LadderConfig())
    lad.reduce_flags[1] = 1
    lad.reduce_flags[2] = 1
    lad.halted[2] = True
    assert list(lad.trading_state) == [TradingState.ACTIVE, TradingState.REDUCING, TradingState.HALTED]
