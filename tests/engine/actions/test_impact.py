"""The square-root impact model and its depth fallbacks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.actions.impact import ImpactModel
from tests.engine.actions.support import instruments


def test_slippage_is_one_percent_times_k_times_the_square_root_of_size_over_depth():
    m = ImpactModel(k=2.0, taker_fee=0.001)
    assert m.slippage_fraction(250_000.0, 1_000_000.0) == pytest.approx(0.02 * 0.5)
    assert m.slippage(250_000.0, 1_000_000.0) == pytest.approx(2_500.0)
    assert m.fee(250_000.0) == pytest.approx(250.0)
    assert m.estimated_cost(250_000.0, 1_000_000.0) == pytest.approx(2_750.0)
    # Vectorised, and the largest order under a slippage cap inverts it.
    n = np.array([0.0, 10_000.0, 1_000_000.0])
    assert m.estimated_cost(n, 1_000_000.0) == pytest.approx(n * (0.02 * np.sqrt(n / 1e6) + 0.001))
    assert m.slippage_fraction(m.max_notional(1_000_000.0, 0.004), 1_000_000.0) == pytest.approx(0.004)
    assert ImpactModel(k=0.0).max_notional(1e6, 0.001) == math.inf


def test_depth_falls_back_to_daily_volume_then_to_the_default():
    btc, _, _, thin = instruments()
    m = ImpactModel(default_depth=123_456.0)
    assert m.depth(btc) == 60_000_000.0  # stated book depth
    assert m.depth(thin) == pytest.approx(250_000_000.0 / 250)  # a day's volume / 250
    bare = thin.model_copy(update={"avg_daily_volume": None})
    assert m.depth(bare) == 123_456.0
    assert ImpactModel(adv_days=100.0).depth(thin) == pytest.approx(2_500_000.0)


@pytest.mark.parametrize("kw", [{"k": -1.0}, {"taker_fee": math.nan}, {"default_depth": 0.0}, {"adv_days": -5.0}])
def test_bad_parameters_are_refused(kw):
    with pytest.raises(ValueError):
        ImpactModel(**kw)
