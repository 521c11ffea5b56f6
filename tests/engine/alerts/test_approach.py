"""The vectorised 'approaching the next level' screen."""

import numpy as np

from engine.alerts.approach import approaching, next_threshold, ratio_slope

W, C, L = 2.0, 1.5, 1.2


def test_within_the_band_above_the_next_more_severe_threshold():
    ratio = np.array([2.30, 2.08, 2.00, 1.58, 1.61, 1.25, 1.10, np.nan])
    level = np.array([0, 0, 1, 1, 1, 2, 3, 0])
    mask = approaching(ratio, level, W, C, L, 0.0, band=0.1, horizon_s=60)
    assert mask.tolist() == [False, True, False, True, False, True, False, False]


def test_a_falling_trend_projected_over_the_horizon_counts_too():
    ratio = np.array([2.5, 2.5, 2.5, 1.9])
    level = np.array([0, 0, 0, 1])
    slope = np.array([-0.01, -0.005, 0.02, np.nan])  # ratio units per second
    mask = approaching(ratio, level, W, C, L, slope, band=0.1, horizon_s=60)
    # 2.5 - 0.6 = 1.9 <= 2.0 crosses; 2.5 - 0.3 = 2.2 does not; rising never; NaN never
    assert mask.tolist() == [True, False, False, False]


def test_per_account_thresholds_and_levels():
    ratio = np.array([2.6, 2.6])
    warning = np.array([2.65, 2.0])
    assert next_threshold(np.array([0, 3]), warning, C, L)[0] == 2.65
    assert np.isnan(next_threshold(np.array([0, 3]), warning, C, L)[1])
    mask = approaching(ratio, np.array([0, 0]), warning, C, L, np.zeros(2), band=0.1, horizon_s=0)
    assert mask.tolist() == [False, False]  # 2.6 is already below 2.65 (the ladder sees to it)
    mask = approaching(ratio, np.array([0, 0]), np.array([2.55, 2.0]), C, L, np.zeros(2), band=0.1, horizon_s=0)
    assert mask.tolist() == [True, False]


def test_slope_from_a_padded_window():
    t = np.array([[0.0, 1.0, 2.0, 3.0], [0.0, 1.0, np.nan, np.nan], [5.0, np.nan, np.nan, np.nan]])
    r = np.array([[2.0, 1.9, 1.8, 1.7], [1.5, 1.6, np.nan, np.nan], [1.0, np.nan, np.nan, np.nan]])
    s = ratio_slope(t, r)
    assert np.allclose(s[:2], [-0.1, 0.1]) and np.isnan(s[2])
