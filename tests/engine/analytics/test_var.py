"""VaR and expected shortfall: parametric, historical, Monte Carlo; per account and for the book."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.analytics.inputs import (
    account_exposures,
    book_exposure,
    correlation_from_groups,
    covariance,
    daily_volatility,
    return_correlation,
    simple_returns,
)
from engine.analytics.var import historical_var, monte_carlo_var, parametric_var
from tests.engine.analytics.support import book, flat

Z99 = 2.3263478740408408  # N^-1(0.99)
PDF_Z99 = math.exp(-0.5 * Z99 * Z99) / math.sqrt(2 * math.pi)  # 0.026652...

# A fixed series of 20 daily returns (no randomness): the historical cases are checked by hand.
SERIES = np.array(
    [0.012, -0.031, 0.004, 0.027, -0.008, -0.054, 0.016, 0.009, -0.022, 0.035,
     -0.011, 0.002, -0.043, 0.019, 0.006, -0.017, 0.024, -0.005, 0.013, -0.026]
)  # fmt: skip


def test_parametric_var_of_one_position_by_hand():
    # 100,000 notional, 2% daily: sigma = 2,000; VaR99 = 2.3263 * 2,000 = 4,652.70
    # ES99 = 2,000 * pdf(2.3263) / 0.01 = 2,000 * 0.026652 / 0.01 = 5,330.4
    r = parametric_var(np.array([[100_000.0]]), np.array([[0.02**2]]), 0.99)
    assert r.var[0] == pytest.approx(Z99 * 2_000.0, rel=1e-12)
    assert r.var[0] == pytest.approx(4_652.70, abs=0.01)
    assert r.es[0] == pytest.approx(2_000.0 * PDF_Z99 / 0.01, rel=1e-12)


def test_parametric_var_of_a_correlated_pair_by_hand():
    # e = (100k, -50k), vols 2% and 3%, correlation 0.5:
    # variance = 100k^2 * 0.0004 + 50k^2 * 0.0009 - 2 * 0.5 * 100k * 50k * 0.02 * 0.03
    #          = 4,000,000 + 2,250,000 - 3,000,000 = 3,250,000 -> sigma = 1,802.78
    cov = covariance(np.array([0.02, 0.03]), np.array([[1.0, 0.5], [0.5, 1.0]]))
    r = parametric_var(np.array([[100_000.0, -50_000.0]]), cov, 0.99)
    assert r.var[0] == pytest.approx(Z99 * math.sqrt(3_250_000.0), rel=1e-12)


def test_horizon_scales_by_the_square_root_of_time():
    e, cov = np.array([[100_000.0]]), np.array([[0.0004]])
    one, four = parametric_var(e, cov, 0.99, 1.0), parametric_var(e, cov, 0.99, 4.0)
    assert four.var[0] == pytest.approx(2 * one.var[0], rel=1e-12)
    r = SERIES[:, None]
    assert historical_var(e, r, 0.95, 9.0).var[0] == pytest.approx(3 * historical_var(e, r, 0.95).var[0], rel=1e-12)


def test_historical_var_is_the_empirical_quantile_of_the_series():
    # Long 10,000: loss_t = -10,000 * r_t. The 20 losses sorted descending start
    # 540, 430, 310, 260, 220, ... At 95%, k = ceil(20 * 0.95) = 19: the 19th smallest, i.e. the
    # 2nd largest loss = 430; ES = mean of the 2 largest = (540 + 430) / 2 = 485.
    r = historical_var(np.array([[10_000.0]]), SERIES[:, None], 0.95)
    assert r.var[0] == pytest.approx(430.0, rel=1e-12)
    assert r.es[0] == pytest.approx(485.0, rel=1e-12)
    losses = -10_000.0 * SERIES
    for conf in (0.8, 0.9, 0.95, 0.99):
        assert historical_var(np.array([[10_000.0]]), SERIES[:, None], conf).var[0] == pytest.approx(
            np.quantile(losses, conf, method="inverted_cdf"), rel=1e-12
        )


def test_a_short_loses_on_the_rallies():
    # Short 10,000: losses are +10,000 * r; largest 350, 270, 240 -> 95%: 2nd largest 270
    assert historical_var(np.array([[-10_000.0]]), SERIES[:, None], 0.95).var[0] == pytest.approx(270.0)


@given(
    lo=st.floats(0.51, 0.98),
    gap=st.floats(0.001, 0.4),
    e=st.lists(st.floats(-1e6, 1e6, allow_subnormal=False), min_size=3, max_size=3),
)
def test_var_is_monotone_in_confidence(lo, gap, e):
    hi = min(lo + gap, 0.999)
    exposure = np.array([e])
    rng = np.random.default_rng(7)
    returns = rng.normal(0.0, 0.03, (60, 3))
    cov = covariance(np.array([0.02, 0.03, 0.05]), correlation_from_groups([flat("A"), flat("B"), flat("C")]))
    for fn in (
        lambda c: parametric_var(exposure, cov, c),
        lambda c: historical_var(exposure, returns, c),
        lambda c: monte_carlo_var(exposure, cov, c, paths=2_000, seed=3),
    ):
        a, b = fn(lo), fn(hi)
        assert b.var[0] >= a.var[0] - 1e-9 * (1 + abs(a.var[0]))
        assert b.es[0] >= a.es[0] - 1e-9 * (1 + abs(a.es[0]))
        assert a.es[0] >= a.var[0] - 1e-9 * (1 + abs(a.var[0]))


def test_seeded_normal_monte_carlo_agrees_with_parametric_within_two_percent():
    # 400k paths: the standard error of the 99% quantile is about
    # sqrt(0.99 * 0.01 / 4e5) / pdf(z) = 0.0006 sigma, 0.03% of VaR.
    cov = covariance(np.array([0.02, 0.03, 0.05]), np.array([[1, 0.8, 0.3], [0.8, 1, 0.5], [0.3, 0.5, 1.0]]))
    exposure = np.array([[250_000.0, -100_000.0, 40_000.0], [0.0, 80_000.0, 0.0]])
    par = parametric_var(exposure, cov, 0.99, 2.0)
    mc = monte_carlo_var(exposure, cov, 0.99, 2.0, paths=400_000, seed=11)
    assert mc.var == pytest.approx(par.var, rel=0.02)
    assert mc.es == pytest.approx(par.es, rel=0.02)


def test_monte_carlo_is_reproducible_and_student_t_has_the_fatter_99_tail():
    cov = np.array([[0.0009]])
    e = np.array([[100_000.0]])
    a = monte_carlo_var(e, cov, 0.99, paths=200_000, seed=5)
    b = monte_carlo_var(e, cov, 0.99, paths=200_000, seed=5)
    assert a.var[0] == b.var[0]
    t = monte_carlo_var(e, cov, 0.99, paths=200_000, seed=5, distribution="student_t", degrees_of_freedom=4)
    # same variance, fatter tails: the 99% quantile of a variance-1 t(4) is 3.747 * sqrt(2/4) = 2.649 > 2.326
    assert t.var[0] == pytest.approx(3.7469 * math.sqrt(0.5) * 3_000.0, rel=0.03)
    assert t.var[0] > a.var[0]


def test_rows_holding_an_instrument_without_inputs_are_unknown_and_others_are_not():
    cov = np.diag([0.0004, np.nan])
    exposure = np.array([[100_000.0, 0.0], [100_000.0, 5_000.0]])
    for r in (parametric_var(exposure, cov, 0.99), monte_carlo_var(exposure, cov, 0.99, paths=1_000)):
        assert np.isfinite(r.var[0]) and np.isnan(r.var[1])
    returns = np.column_stack([SERIES, np.full(SERIES.size, np.nan)])
    h = historical_var(exposure, returns, 0.95)
    assert h.var[0] == pytest.approx(430.0 * 10) and np.isnan(h.var[1])


def test_accounts_and_the_book_from_a_book():
    insts = [flat("AUSDT", group="g"), flat("BUSDT", group="g")]
    b = book(
        insts,
        {
            "long": (10_000.0, [("AUSDT", 2.0, 100.0)]),
            "hedge": (10_000.0, [("AUSDT", -2.0, 100.0), ("BUSDT", 1.0, 50.0)]),
        },
        {"AUSDT": 110.0, "BUSDT": 40.0},
    )
    e = account_exposures(b)
    assert e.tolist() == [[220.0, 0.0], [-220.0, 40.0]]
    assert book_exposure(b).tolist() == [[0.0, 40.0]]  # the two A positions net in the book
    cov = np.diag([0.0004, 0.0009])
    assert parametric_var(book_exposure(b), cov, 0.99).var[0] == pytest.approx(Z99 * 40.0 * 0.03, rel=1e-12)


def test_estimates_from_closes():
    closes = np.array([[100.0, 10.0], [110.0, 10.0], [99.0, 10.0]])  # +10%, -10%; flat
    r = simple_returns(closes)
    assert r[:, 0] == pytest.approx([0.1, -0.1])
    assert daily_volatility(r) == pytest.approx([0.1, 0.0])  # zero-mean: sqrt((0.01 + 0.01) / 2)
    c = return_correlation(r)
    assert c.tolist() == [[1.0, 0.0], [0.0, 1.0]]  # a flat column is uncorrelated
