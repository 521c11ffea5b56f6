"""Ratio-history downsampling, drawdown, funding drain and the projected ratio."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from engine.analytics.history import downsample, drawdown, funding_drain, project_ratio
from tests.engine.analytics.support import book, flat


def test_downsampling_keeps_the_dip_between_kept_samples():
    t = np.arange(1_000.0)
    ratio = np.full(1_000, 3.0)
    ratio[437] = 1.1  # a one-sample dip to LIQUIDATION
    d = downsample(t, ratio, 50)
    assert d.time.size == 50
    assert d.low.min() == 1.1 and d.high.max() == 3.0
    assert d.time[-1] == 999.0 and d.last[-1] == 3.0


@given(values=arrays(np.float64, st.integers(1, 300), elements=st.floats(0.0, 100.0)), n=st.integers(1, 40))
def test_downsampling_properties(values, n):
    t = np.cumsum(np.ones(values.size))
    d = downsample(t, values, n)
    assert d.time.size <= max(n, 1) and d.time.size >= 1
    assert d.low.min() == values.min() and d.high.max() == values.max()
    assert d.last[-1] == values[-1]
    assert np.all(np.diff(d.time) > 0)


def test_drawdown_by_hand():
    # 100, 120, 90, 110: drawdowns 0, 0, 1 - 90/120 = 0.25, 1 - 110/120 = 0.0833
    current, worst = drawdown(np.array([100.0, 120.0, 90.0, 110.0]))
    assert current == pytest.approx(1 / 12, rel=1e-12)
    assert worst == pytest.approx(0.25, rel=1e-12)
    cur, mx = drawdown(np.array([[100.0, 120.0, 90.0, 110.0], [5.0, 6.0, 7.0, 8.0]]))
    assert mx.tolist() == pytest.approx([0.25, 0.0]) and cur[1] == 0.0


def test_funding_drain_by_hand():
    b = book(
        [flat("AUSDT"), flat("BUSDT")],
        {"a": (10_000.0, [("AUSDT", 10.0, 100.0), ("BUSDT", -5.0, 200.0)])},
        {"AUSDT": 100.0, "BUSDT": 200.0},
    )
    # long 1,000 pays 0.01% per 8 h, short 1,000 receives 0.03% / 8h:
    # (1,000 * 0.0001 - 1,000 * 0.0003) / 8 = -0.025 per hour (received)
    assert funding_drain(b, np.array([0.0001, 0.0003]))[0] == pytest.approx(-0.025, rel=1e-12)


def test_projection_at_this_rate_by_hand():
    # Ratio falling 0.05 per hour over the last 4 hours, now 2.5; funding 10/h on MM 1,000 adds
    # 0.01/h: rate -0.06/h. Hours to 2.0: 0.5 / 0.06 = 8.33; to 1.5: 16.67; to 1.2: 21.67.
    t = np.arange(0.0, 4 * 3600 + 1, 900.0)
    ratios = 2.7 - 0.05 * t / 3600
    p = project_ratio(t, ratios, np.array([1_000.0]), np.array([10.0]), horizon_hours=24.0)
    assert p.trend_per_hour[0] == pytest.approx(-0.05, rel=1e-9)
    assert p.funding_per_hour[0] == pytest.approx(0.01, rel=1e-12)
    assert p.projected[0] == pytest.approx(2.5 - 0.06 * 24, rel=1e-9)
    hours = p.hours_to_threshold()
    assert hours["warning"] == pytest.approx(0.5 / 0.06, rel=1e-9)
    assert hours["critical"] == pytest.approx(1.0 / 0.06, rel=1e-9)
    assert hours["liquidation"] == pytest.approx(1.3 / 0.06, rel=1e-9)


def test_projection_of_a_rising_ratio_never_arrives_and_one_below_is_there_already():
    t = np.array([0.0, 3600.0, 7200.0])
    p = project_ratio(t, np.array([[3.0, 3.1, 3.2], [1.4, 1.45, 1.45]]), np.array([100.0, 100.0]))
    assert p.hours_to_threshold(0) == {"warning": None, "critical": None, "liquidation": None}
    assert p.hours_to_threshold(1)["critical"] == 0.0 and p.hours_to_threshold(1)["liquidation"] is None
    custom = project_ratio(t, np.array([3.0, 2.9, 2.8]), np.array([100.0]), thresholds={"1.5": 1.5})
    assert custom.hours_to_threshold()["1.5"] == pytest.approx(13.0, rel=1e-9)
