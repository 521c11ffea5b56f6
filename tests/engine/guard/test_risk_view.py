"""The account detail carries live risk analytics from the guard's own state."""

import numpy as np

from engine.analytics.inputs import correlation_from_groups, covariance
from engine.risk_view import daily_volatility
from tests.engine.guard.support import drive, make_guard


async def test_every_held_account_has_var_stress_and_touch_probabilities(tmp_path):
    g = make_guard(tmp_path, "calm")
    await drive(g, 5)
    ratios = g.book.ratio.copy()
    riskiest, safest = int(np.nanargmin(ratios)), int(np.nanargmax(np.where(np.isfinite(ratios), ratios, -1)))
    risk = {a: g.account_detail(g.book.info[a].id)["risk"] for a in (riskiest, safest)}
    for r in risk.values():
        assert r["var_parametric"] > 0 and r["es_parametric"] > r["var_parametric"]
        assert 0.0 <= r["touch_liquidation_price_prob"] <= r["touch_liquidation_threshold_prob"] <= 1.0
        assert r["stress_worst_scenario"]
    # the most endangered account is likelier to reach its liquidation price than the safest
    assert risk[riskiest]["touch_liquidation_price_prob"] > risk[safest]["touch_liquidation_price_prob"]


async def test_one_position_var_matches_the_hand_formula(tmp_path):
    g = make_guard(tmp_path, "calm")
    await drive(g, 2)
    counts = g.book.acct_pos_count
    # the variance-covariance VaR of the account: z * sqrt(e' C e), z(99%) = 2.326348
    a = int(np.argmin(np.where(counts > 0, counts, 99)))
    pos = g.book.account_positions(a)
    e = np.zeros(len(g.book.instruments))
    np.add.at(e, g.book.pos_instrument[pos], g.book.pos_qty[pos] * g.book.contract_size[g.book.pos_instrument[pos]]
              * g.book.mark[g.book.pos_instrument[pos]])  # fmt: skip
    cov = covariance(daily_volatility(g), correlation_from_groups(g.book.instruments))
    expected = 2.3263478740 * np.sqrt(e @ cov @ e)
    got = g.account_detail(g.book.info[a].id)["risk"]["var_parametric"]
    assert abs(got - expected) <= 1e-6 * expected
