"""Barrier-touch probabilities and the prices at which a ratio threshold is reached."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.analytics.barrier import (
    account_touch_probability,
    liquidation_touch_probability,
    threshold_prices,
    touch_probability,
)
from engine.analytics.revalue import value_at_marks
from engine.levels import Thresholds
from tests.engine.analytics.support import book, flat, tiered


def brownian_touch(b: float, sigma: float, nu: float, days: float, paths: int, steps: int, seed: int) -> float:
    """Monte Carlo P(min or max of nu t + sigma W_t reaches b within `days`), continuous monitoring:
    between grid points a Brownian bridge from x0 to x1 (both short of b) crosses b with
    probability exp(-2 (x0 - b)(x1 - b) / (sigma^2 dt)), so a coarse grid has no bias."""
    rng = np.random.default_rng(seed)
    dt = days / steps
    x = np.cumsum(nu * dt + sigma * math.sqrt(dt) * rng.standard_normal((paths, steps)), axis=1)
    x = np.hstack([np.zeros((paths, 1)), x])
    d = x - b
    both = d[:, :-1] * d[:, 1:]  # > 0: both ends short of the barrier
    with np.errstate(over="ignore"):
        survive = np.prod(np.where(both > 0, 1.0 - np.exp(-2.0 * both / (sigma**2 * dt)), 0.0), axis=1)
    return float(1.0 - survive.mean())


def test_touch_probability_by_hand():
    # spot 100, barrier 90, 3% a day, 4 days: 2 N(-ln(100/90) / (0.03 * 2)) = 2 N(-1.75597) = 0.07909
    p = touch_probability(100.0, 90.0, 0.03, 4.0)
    assert p == pytest.approx(2 * 0.5 * math.erfc(math.log(100 / 90) / 0.06 / math.sqrt(2)), rel=1e-12)
    assert p == pytest.approx(0.07909, abs=1e-5)
    assert touch_probability(100.0, 110.0, 0.03, 4.0) == pytest.approx(
        2 * 0.5 * math.erfc(math.log(1.1) / 0.06 / math.sqrt(2))
    )


@pytest.mark.parametrize(("barrier", "nu"), [(90.0, 0.0), (112.0, 0.0), (90.0, -0.004), (112.0, 0.006), (85.0, 0.01)])
def test_touch_probability_matches_a_monte_carlo_estimate(barrier, nu):
    sigma, days = 0.03, 5.0
    expected = touch_probability(100.0, barrier, sigma, days, drift=nu)
    mc = brownian_touch(math.log(barrier / 100.0), sigma, nu, days, 40_000, 20, seed=3)
    # binomial standard error sqrt(p (1 - p) / n) <= 0.0025; allow 4 of them
    assert mc == pytest.approx(float(expected), abs=4 * math.sqrt(expected * (1 - expected) / 40_000) + 1e-3)


def test_touch_probability_edges():
    assert touch_probability(100.0, np.nan, 0.03, 1.0) == 0.0  # no barrier
    assert np.isnan(touch_probability(100.0, 90.0, np.nan, 1.0))  # no volatility
    assert touch_probability(100.0, 90.0, 0.0, 1.0) == 0.0  # nothing moves
    assert touch_probability(100.0, 100.0, 0.03, 1.0) == 1.0
    # a long's barrier already above the mark: touched
    assert touch_probability(100.0, 101.0, 0.03, 1.0, direction=-1.0) == 1.0
    assert touch_probability(100.0, 101.0, 0.03, 1.0, direction=1.0) < 1.0


def demo_book():
    return book(
        [tiered("BTCUSDT", underlying="BTC"), flat("SOLUSDT", underlying="SOL")],
        {
            "long": (4_000.0, [("BTCUSDT", 1.0, 60_000.0), ("SOLUSDT", 100.0, 150.0)]),
            "short": (3_000.0, [("BTCUSDT", -0.5, 60_000.0)]),
            "iso": (10_000.0, [("SOLUSDT", 200.0, 150.0)]),
        },
        {"BTCUSDT": 60_000.0, "SOLUSDT": 150.0},
        isolated={"iso": [1_000.0]},
        thresholds=Thresholds(),
    )


def test_threshold_price_at_ratio_one_is_the_liquidation_price():
    b = demo_book()
    assert threshold_prices(b, 1.0) == pytest.approx(b.liquidation_prices(), rel=1e-12)


@pytest.mark.parametrize("theta", [1.2, 1.5, 3.0])
def test_at_the_threshold_price_the_account_ratio_is_the_threshold(theta):
    b = demo_book()
    prices = threshold_prices(b, theta)
    for p, price in enumerate(prices):
        marks = b.mark.copy()
        marks[b.pos_instrument[p]] = price
        v = value_at_marks(b, marks)
        assert v.ratio[b.pos_account[p]] == pytest.approx(theta, rel=1e-9)


def test_threshold_price_by_hand():
    # short 0.5 BTC from 60,000 on 3,000: equity 3,000 - 0.5 (P - 60,000); MM = 0.5 P * 0.004 (P < 100,000).
    # ratio 1.2: 33,000 - 0.5 P = 1.2 * 0.002 P -> P = 33,000 / 0.5024 = 65,684.71
    b = demo_book()
    assert threshold_prices(b, 1.2)[2] == pytest.approx(33_000.0 / 0.5024, rel=1e-12)


def test_liquidation_probabilities_per_position_and_account():
    b = demo_book()
    vol = np.array([0.03, 0.05])
    venue_pos, venue = liquidation_touch_probability(b, vol, 3.0)
    lp = b.liquidation_prices()
    expected = touch_probability(b.mark[b.pos_instrument], lp, vol[b.pos_instrument], 3.0)
    assert venue_pos == pytest.approx(expected, rel=1e-12)
    assert venue[0] == pytest.approx(max(expected[0], expected[1]), rel=1e-12)
    # the LIQUIDATION threshold (1.2) comes before the venue's 1.0: at least as likely
    thr_pos, thr = liquidation_touch_probability(b, vol, 3.0, threshold="liquidation")
    assert np.all(thr_pos >= venue_pos - 1e-15) and np.all(thr >= venue - 1e-15)
    assert np.all((venue >= 0) & (venue <= 1))


@pytest.mark.parametrize("threshold", ["venue", "liquidation"])
def test_one_accounts_touch_probability_equals_the_whole_book_figure(threshold):
    b = demo_book()
    vol = np.array([0.03, 0.05])
    _, per_account = liquidation_touch_probability(b, vol, 2.0, threshold)
    for a in range(b.n_accounts):
        assert account_touch_probability(b, a, vol, 2.0, threshold) == pytest.approx(per_account[a], rel=1e-12)
    for theta in (1.2, 2.5):  # and the threshold prices of a subset are those of the whole book
        some = np.array([2, 0])
        assert threshold_prices(b, theta, some) == pytest.approx(threshold_prices(b, theta)[some], rel=1e-12)
