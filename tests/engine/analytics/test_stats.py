"""Normal CDF and quantile without scipy, the empirical tail convention, correlated draws."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from engine.analytics.stats import (
    correlated_draws,
    covariance_factor,
    normal_cdf,
    normal_pdf,
    normal_ppf,
    tail_rank,
    tail_var_es,
)


def test_normal_cdf_matches_erfc_to_double_precision():
    x = np.linspace(-37.0, 12.0, 20_001)
    expected = np.array([0.5 * math.erfc(-v / math.sqrt(2.0)) for v in x])
    assert np.max(np.abs(normal_cdf(x) - expected)) < 1e-15
    # The lower tail keeps relative precision (liquidation probabilities live there); far out,
    # exp(-x^2 / 2) itself loses about x^2 * 1e-16.
    lower = (x < -1.0) & (x > -20.0)
    assert np.max(np.abs(normal_cdf(x[lower]) / expected[lower] - 1.0)) < 1e-13


def test_normal_cdf_edges():
    assert normal_cdf(-np.inf) == 0.0 and normal_cdf(np.inf) == 1.0 and np.isnan(normal_cdf(np.nan))
    assert normal_pdf(0.0) == pytest.approx(1.0 / math.sqrt(2.0 * math.pi), rel=1e-15)


def test_normal_ppf_matches_the_standard_library():
    # statistics.NormalDist uses Wichura's AS241 (double precision): an independent oracle.
    nd = NormalDist()
    p = np.concatenate([np.logspace(-300, -2, 400), np.linspace(0.01, 0.99, 2001), 1.0 - np.logspace(-12, -2, 200)])
    expected = np.array([nd.inv_cdf(v) for v in p])
    assert np.max(np.abs(normal_ppf(p) - expected) / np.maximum(1.0, np.abs(expected))) < 1e-12


def test_normal_ppf_known_values_and_edges():
    assert normal_ppf(0.99) == pytest.approx(2.3263478740408408, rel=1e-14)
    assert normal_ppf(0.975) == pytest.approx(1.959963984540054, rel=1e-14)
    assert normal_ppf(0.5) == 0.0
    assert normal_ppf(0.0) == -np.inf and normal_ppf(1.0) == np.inf
    assert np.isnan(normal_ppf(1.5)) and np.isnan(normal_ppf(-0.1))


def test_tail_convention_is_the_inverted_cdf_quantile():
    losses = np.arange(1.0, 11.0)  # 1..10
    # 75%: k = ceil(10 * 0.75) = 8 -> VaR 8, ES mean(8, 9, 10) = 9
    var, es = tail_var_es(losses, 0.75)
    assert (var, es) == (8.0, 9.0)
    # 90%: k = 9 -> VaR 9, ES mean(9, 10) = 9.5
    var, es = tail_var_es(losses[::-1], 0.90)
    assert (var, es) == (9.0, 9.5)
    for conf in (0.75, 0.9, 0.95, 0.99, 0.613):
        assert tail_var_es(losses, conf)[0] == np.quantile(losses, conf, method="inverted_cdf")


def test_tail_rank_is_not_fooled_by_rounding():
    assert tail_rank(100, 0.99) == 99  # 100 * 0.99 = 98.99999999999999 in binary
    assert tail_rank(250, 0.99) == 248
    assert tail_rank(1, 0.99) == 1


def test_tail_figures_along_an_axis_and_with_nan():
    losses = np.array([[1.0, 5.0], [2.0, np.nan], [3.0, 7.0]])
    var, es = tail_var_es(losses, 0.5, axis=0)  # k = ceil(1.5) = 2 -> 2nd smallest
    assert var[0] == 2.0 and es[0] == 2.5
    assert np.isnan(var[1]) and np.isnan(es[1])


def test_singular_covariance_is_factored():
    # two perfectly correlated instruments
    cov = np.array([[4.0, 6.0], [6.0, 9.0]])
    a = covariance_factor(cov)
    assert a @ a.T == pytest.approx(cov, abs=1e-12)


@pytest.mark.parametrize("distribution", ["normal", "student_t"])
def test_correlated_draws_have_the_requested_covariance(distribution):
    cov = np.array([[0.04, 0.012], [0.012, 0.09]])
    x = correlated_draws(covariance_factor(cov), 400_000, np.random.default_rng(5), distribution, 6.0)
    assert np.cov(x.T) == pytest.approx(cov, rel=0.03, abs=1e-4)


def test_student_t_needs_more_than_two_degrees_of_freedom():
    with pytest.raises(ValueError, match="degrees_of_freedom"):
        correlated_draws(np.eye(1), 10, np.random.default_rng(1), "student_t", 2.0)
