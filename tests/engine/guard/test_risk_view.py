"""The account detail carries live risk analytics from the guard's own state."""

import json

import numpy as np
import pytest

from engine import risk_view
from engine.analytics.inputs import correlation_from_groups, covariance
from engine.analytics.maintenance import VolatilityAdjustment
from engine.analytics.stress import StressScenario
from engine.config import MaintenanceAddonsConfig
from engine.model import Account, InputError, Position
from engine.risk_view import daily_volatility
from tests.engine.guard.support import config, drive, make_guard


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


# ---------------------------------------------------------------------------- the GuardView analytics
# A small book on the demo instruments, marks at the simulator's start (clock paused, never driven):
# "solo" is long 0.5 BTC from 60,000 (cross, 10,000 wallet); "bear" short 5 ETH; "sol" long 100 SOL.
# 0.5 BTC at ~64,000 is 32,000 notional: BTCUSDT's first bracket, mmr 0.4 %, no maintenance amount.
SOLO = Account(id="solo", wallet_balance=10_000, positions=[Position(symbol="BTCUSDT", qty=0.5, entry_price=60_000)])
BEAR = Account(id="bear", wallet_balance=20_000, positions=[Position(symbol="ETHUSDT", qty=-5, entry_price=3_500)])
SOL = Account(id="sol", wallet_balance=5_000, positions=[Position(symbol="SOLUSDT", qty=100, entry_price=140)])


def small_guard(tmp_path, cfg=None, accounts=(SOLO, BEAR, SOL)):
    return make_guard(tmp_path, "calm", cfg=cfg, accounts=list(accounts))


def mark(g, symbol):
    return float(g.book.mark[g.book.symbol_index[symbol]])


def test_a_zero_move_leaves_every_equity_and_ratio_unchanged(tmp_path):
    g = small_guard(tmp_path)
    out = g.stress({"moves": {"*": 0.0}})
    assert out["total_pnl"] == 0.0 and out["scenario"]["name"] == "ad hoc"
    assert [a["account"] for a in out["accounts"]] == sorted(
        ["solo", "bear", "sol"], key=lambda i: g.book.ratio[g.book.account_index[i]]
    )
    for a in out["accounts"]:
        i = g.book.account_index[a["account"]]
        assert a["equity_after"] == a["equity_before"] == g.book.equity[i]
        assert a["ratio_after"] == a["ratio_before"] == g.book.ratio[i]
        assert a["level_after"] == a["level_before"] and a["drivers"] == []


def test_minus_ten_percent_on_a_long_cross_account_is_the_hand_calculation(tmp_path):
    g = small_guard(tmp_path)
    m = mark(g, "BTCUSDT")
    out = g.stress({"name": "btc -10%", "moves": {"BTCUSDT": -0.10}}, top=10)
    solo = next(a for a in out["accounts"] if a["account"] == "solo")
    equity = 10_000 + 0.5 * (m - 60_000)
    after = 10_000 + 0.5 * (0.9 * m - 60_000)  # = equity - 10 % of the 0.5 * m long notional
    assert solo["equity_before"] == pytest.approx(equity, rel=1e-12)
    assert solo["equity_after"] == pytest.approx(after, rel=1e-12)
    assert solo["equity_after"] == pytest.approx(equity - 0.05 * m, rel=1e-12)
    assert solo["ratio_after"] == pytest.approx(after / (0.5 * 0.9 * m * 0.004), rel=1e-12)
    assert solo["drivers"] == ["BTCUSDT"]  # the losing symbol
    for other in (a for a in out["accounts"] if a["account"] != "solo"):  # nothing else moved
        assert other["equity_after"] == other["equity_before"] and other["drivers"] == []
    assert out["total_pnl"] == pytest.approx(-0.05 * m, rel=1e-12)
    assert out["scenario"] == {"name": "btc -10%", "description": "", "moves": {"BTCUSDT": -0.1}, "vol_shocks": {}}
    assert sum(out["levels_after"].values()) == 3
    assert len(g.stress({"moves": {"*": -0.1}}, top=1)["accounts"]) == 1


def test_a_gain_has_no_drivers_and_a_short_loses_on_a_rise(tmp_path):
    g = small_guard(tmp_path)
    out = g.stress({"moves": {"majors": 0.2}})
    by = {a["account"]: a for a in out["accounts"]}
    assert by["solo"]["drivers"] == [] and by["bear"]["drivers"] == ["ETHUSDT"] and by["sol"]["drivers"] == []
    assert by["bear"]["equity_after"] == pytest.approx(by["bear"]["equity_before"] - 5 * 0.2 * mark(g, "ETHUSDT"))


def test_named_scenarios_come_from_the_configuration(tmp_path):
    mine = StressScenario(name="btc halves", description="only BTC", moves={"BTC": -0.5})
    g = small_guard(tmp_path, cfg=config(risk={"scenarios": [mine]}))
    out = g.stress("btc halves")
    assert out["scenario"]["description"] == "only BTC"
    assert out["total_pnl"] == pytest.approx(-0.25 * mark(g, "BTCUSDT"), rel=1e-12)
    with pytest.raises(InputError, match="'crypto crash'"):  # the default scenarios are not configured here
        g.stress("crypto crash")
    book = g.book_risk()
    assert [s["name"] for s in book["scenarios"]] == ["btc halves"]
    assert book["scenarios"][0]["worst_account"] == "solo"
    assert book["scenarios"][0]["total_pnl"] == pytest.approx(-0.25 * mark(g, "BTCUSDT"), rel=1e-12)
    assert g.account_detail("solo")["risk"]["stress_worst_scenario"] == "btc halves"


def test_bad_scenarios_are_refused_naming_what_is_wrong(tmp_path):
    g = small_guard(tmp_path)
    with pytest.raises(InputError, match="unknown scenario 'no such thing'"):
        g.stress("no such thing")
    with pytest.raises(InputError, match=r"scenario\.moves.*above -1"):
        g.stress({"moves": {"*": -1.5}})
    with pytest.raises(InputError, match=r"scenario\.moves: unknown key 'BTCUSD'"):
        g.stress({"moves": {"BTCUSD": -0.1}})
    with pytest.raises(InputError, match=r"scenario\.shocks: unknown field"):
        g.stress({"shocks": {"*": -0.1}})
    with pytest.raises(InputError, match="top"):
        g.stress("market -10%", top=-1)


def test_grid_cell_at_no_move_is_the_current_ratio(tmp_path):
    g = small_guard(tmp_path)
    a = g.book.account_index["solo"]
    m = mark(g, "BTCUSDT")
    grid = g.scenario_grid("solo", [-0.1, 0.0, 0.1], [0.0, 0.5])
    assert grid["account"] == "solo" and grid["price_moves"] == [-0.1, 0.0, 0.1] and grid["vol_shocks"] == [0.0, 0.5]
    assert grid["ratio"][1][0] == pytest.approx(float(g.book.ratio[a]), rel=1e-12)
    assert grid["equity"][1][0] == pytest.approx(float(g.book.equity[a]), rel=1e-12)
    assert grid["pnl"][0] == pytest.approx([-0.05 * m, -0.05 * m], rel=1e-12)
    assert grid["level"][1][0] == "SAFE" and len(grid["level"]) == 3 and len(grid["level"][0]) == 2
    default = g.scenario_grid("solo", None, None)
    assert len(default["price_moves"]) == 9 and default["vol_shocks"] == [0.0, 0.5, 1.0]
    with pytest.raises(KeyError, match="nope"):
        g.scenario_grid("nope", None, None)
    with pytest.raises(InputError, match="price_moves"):
        g.scenario_grid("solo", [-1.0], None)
    with pytest.raises(InputError, match="vol_shocks"):
        g.scenario_grid("solo", None, [])
    with pytest.raises(InputError, match="cells"):
        g.scenario_grid("solo", [0.0] * 30, [0.0] * 30)


def test_what_if_closing_half_of_the_only_position_is_the_hand_calculation(tmp_path):
    g = small_guard(tmp_path)
    m = mark(g, "BTCUSDT")
    equity = 10_000 + 0.5 * (m - 60_000)
    out = g.what_if("solo", "BTCUSDT", "sell", 0.25)  # at the mark
    assert out["price"] == m and out["qty"] == 0.25 and out["side"] == "sell"
    assert (out["qty_before"], out["qty_after"]) == (0.5, 0.25)
    assert out["realized_pnl"] == pytest.approx(0.25 * (m - 60_000), rel=1e-12)
    assert out["equity_after"] == pytest.approx(equity, rel=1e-12)  # at the mark: realised = unrealised given up
    assert out["maintenance_margin_before"] == pytest.approx(0.5 * m * 0.004, rel=1e-12)
    assert out["maintenance_margin_after"] == pytest.approx(0.25 * m * 0.004, rel=1e-12)
    assert out["ratio_after"] == pytest.approx(equity / (0.25 * m * 0.004), rel=1e-12)
    assert out["ratio_after"] == pytest.approx(2 * out["ratio_before"], rel=1e-12)
    assert out["level_before"] == out["level_after"] == "SAFE"
    at = g.what_if("solo", "BTCUSDT", "sell", 0.25, 70_000.0)  # above the mark: 0.25 * (70,000 - mark) more
    assert at["realized_pnl"] == pytest.approx(0.25 * 10_000, rel=1e-12)
    assert at["equity_after"] == pytest.approx(equity + 0.25 * (70_000 - m), rel=1e-12)


def test_what_if_refuses_bad_input_naming_it(tmp_path):
    g = small_guard(tmp_path)
    with pytest.raises(KeyError, match="nope"):
        g.what_if("nope", "BTCUSDT", "buy", 1.0)
    with pytest.raises(InputError, match=r"symbol.*'DOGE'"):
        g.what_if("solo", "DOGE", "buy", 1.0)
    with pytest.raises(InputError, match="side"):
        g.what_if("solo", "BTCUSDT", "long", 1.0)
    for qty in (0.0, -1.0, float("nan")):
        with pytest.raises(InputError, match="qty"):
            g.what_if("solo", "BTCUSDT", "buy", qty)
    with pytest.raises(InputError, match="price"):
        g.what_if("solo", "BTCUSDT", "buy", 1.0, -5.0)


def hand_cov(g, symbols):
    """Daily covariance written out: the simulator's annual vols / sqrt(365), the group rule
    (0.85 within majors, 0.5 across groups)."""
    vols = {"BTCUSDT": 0.55, "ETHUSDT": 0.70, "SOLUSDT": 0.90}
    corr = {("BTCUSDT", "ETHUSDT"): 0.85, ("BTCUSDT", "SOLUSDT"): 0.5, ("ETHUSDT", "SOLUSDT"): 0.5}
    d = [vols[s] / np.sqrt(365.0) for s in symbols]
    c = np.eye(len(symbols))
    for i, a in enumerate(symbols):
        for j, b in enumerate(symbols):
            if i != j:
                c[i, j] = corr.get((a, b), corr.get((b, a)))
    return c * np.outer(d, d)


def test_book_parametric_var_is_z_sqrt_ete_sqrt_h(tmp_path):
    g = small_guard(tmp_path, cfg=config(risk={"confidence": 0.975, "horizon_days": 4.0}))
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    e = np.array([0.5 * mark(g, "BTCUSDT"), -5 * mark(g, "ETHUSDT"), 100 * mark(g, "SOLUSDT")])
    sigma = np.sqrt(e @ hand_cov(g, symbols) @ e)
    z = 1.959963984540054  # N^-1(0.975)
    out = g.book_risk()
    assert (out["confidence"], out["horizon_days"]) == (0.975, 4.0)
    assert out["var"]["parametric"] == pytest.approx(z * sigma * 2.0, rel=1e-9)  # sqrt(4 days) = 2
    pdf = np.exp(-z * z / 2) / np.sqrt(2 * np.pi)
    assert out["es"]["parametric"] == pytest.approx(sigma * pdf / 0.025 * 2.0, rel=1e-9)
    # Monte Carlo of the same normal model lands near it (10,000 paths), and is reproducible
    assert out["var"]["monte_carlo"] == pytest.approx(out["var"]["parametric"], rel=0.05)
    assert small_guard(tmp_path / "again", cfg=g.config).book_risk()["var"]["monte_carlo"] == out["var"]["monte_carlo"]
    assert out["var"]["historical"] is None and "not computed" in out["method_notes"]["historical"]
    assert out["margin"]["methods"]["position"] == pytest.approx(float(g.book.acct_im.sum()), rel=1e-12)
    assert out["margin"]["maintenance_addons"] == {"volatility": None, "impact": None}
    # the account figures follow the same settings
    solo = g.account_detail("solo")["risk"]
    e_solo = 0.5 * mark(g, "BTCUSDT")
    assert (solo["confidence"], solo["horizon_days"]) == (0.975, 4.0)
    assert solo["var_parametric"] == pytest.approx(z * e_solo * 0.55 / np.sqrt(365.0) * 2.0, rel=1e-9)


def test_book_historical_var_from_the_price_window_scaled_to_a_day(tmp_path):
    g = small_guard(tmp_path, accounts=(SOLO,))
    b = g.book.symbol_index["BTCUSDT"]
    returns = [(t - 50) / 10_000 for t in range(100)]  # -0.5 % ... +0.49 %, each once
    marks = [g.book.mark.copy()]
    for r in returns:
        nxt = marks[-1].copy()
        nxt[b] *= 1 + r
        marks.append(nxt)
    g._price_window.clear()
    g._price_window.extend(marks[:-1])  # 99 returns: one short of 1 / (1 - 0.99)
    assert g.book_risk()["var"]["historical"] is None
    g._price_window.clear()
    g._price_window.extend(marks)
    g.version += 1  # a new engine step (the cache is per version)
    out = g.book_risk()
    e = 0.5 * mark(g, "BTCUSDT")
    scale = np.sqrt(86_400 / 0.25)  # 0.25 s ticks to one day
    # 100 returns at 99 %: the VaR is the 99th smallest loss = the 2nd largest (r = -0.49 %),
    # the ES the mean of the two largest (-0.5 %, -0.49 %)
    assert out["var"]["historical"] == pytest.approx(e * 0.0049 * scale, rel=1e-9)
    assert out["es"]["historical"] == pytest.approx(e * (0.005 + 0.0049) / 2 * scale, rel=1e-9)
    assert (
        "100 returns" in out["method_notes"]["historical"] and "sqrt(86400 / 0.25)" in out["method_notes"]["historical"]
    )
    # The account's own figures, from the same window: the one account is the book here.
    risk = g.account_detail("solo")["risk"]
    assert risk["var_historical"] == pytest.approx(e * 0.0049 * scale, rel=1e-9)
    assert risk["es_historical"] == pytest.approx(e * (0.005 + 0.0049) / 2 * scale, rel=1e-9)


def test_an_accounts_seeded_normal_monte_carlo_var_is_within_2pct_of_its_parametric_var(tmp_path):
    g = small_guard(tmp_path)
    for account in ("solo", "bear", "sol"):
        risk = g.account_detail(account)["risk"]
        assert risk["var_historical"] is None  # no price window yet: not computable, not zero
        assert risk["var_monte_carlo"] == pytest.approx(risk["var_parametric"], rel=0.02)
        assert risk["es_monte_carlo"] == pytest.approx(risk["es_parametric"], rel=0.03)


def test_repeated_calls_at_one_version_do_not_recompute(tmp_path, monkeypatch):
    g = small_guard(tmp_path)
    calls = {"account": 0, "book": 0}
    account_impl, book_impl = risk_view._account_risk, risk_view._book_risk

    def count_account(g, a):
        calls["account"] += 1
        return account_impl(g, a)

    def count_book(g):
        calls["book"] += 1
        return book_impl(g)

    monkeypatch.setattr(risk_view, "_account_risk", count_account)
    monkeypatch.setattr(risk_view, "_book_risk", count_book)
    first = g.account_detail("solo")["risk"]
    for _ in range(5):
        assert g.account_detail("solo")["risk"] == first
    book = g.book_risk()
    book["var"]["parametric"] = -1.0  # a caller's change does not reach the cache
    assert g.book_risk()["var"]["parametric"] != -1.0
    assert calls == {"account": 1, "book": 1}
    g.account_detail("bear")  # another account is computed once too
    g.account_detail("bear")
    assert calls["account"] == 2
    g.clock.advance(0.25)
    g.evaluate(g.clock.now())  # a new version: computed again
    g.account_detail("solo")
    g.book_risk()
    assert calls == {"account": 3, "book": 2}
    g.reload(config(risk={"confidence": 0.95}))  # a new configuration at the same version
    assert g.account_detail("solo")["risk"]["confidence"] == 0.95 and g.book_risk()["confidence"] == 0.95
    assert calls == {"account": 4, "book": 3}
    a = g.book.account_index["solo"]
    g.book.warning[a] += 1.0  # a threshold change between two steps
    g.account_detail("solo")
    assert calls["account"] == 5


def addons_config(impact=False):
    # BTC (annual 0.55), ETH (0.70), SOL (0.90) all in the elevated regime (> 0.5): MM x 1.25;
    # a +100 % volatility shock puts each above 1.0: stressed, MM x 1.5
    adj = VolatilityAdjustment(
        elevated_above=0.5, stressed_above=1.0, elevated_multiplier=1.25, stressed_multiplier=1.5
    )
    return config(risk={"maintenance": MaintenanceAddonsConfig(volatility=adj, impact=impact)})


def test_enabled_maintenance_addons_are_in_every_ratio_before_and_after(tmp_path):
    g = small_guard(tmp_path, cfg=addons_config())
    m = mark(g, "BTCUSDT")
    equity = 10_000 + 0.5 * (m - 60_000)
    mm = 0.5 * m * 0.004
    calm = g.stress({"moves": {"*": 0.0}})
    solo = next(a for a in calm["accounts"] if a["account"] == "solo")
    assert solo["ratio_before"] == solo["ratio_after"] == pytest.approx(equity / (mm * 1.25), rel=1e-12)
    shocked = g.stress({"vol_shocks": {"*": 1.0}})
    solo = next(a for a in shocked["accounts"] if a["account"] == "solo")
    assert solo["equity_after"] == solo["equity_before"]  # volatility moves no PnL of a linear contract
    assert solo["ratio_after"] == pytest.approx(equity / (mm * 1.5), rel=1e-12)
    grid = g.scenario_grid("solo", [0.0], [0.0, 1.0])
    assert grid["ratio"][0] == pytest.approx([equity / (mm * 1.25), equity / (mm * 1.5)], rel=1e-12)
    half = g.what_if("solo", "BTCUSDT", "sell", 0.25)
    assert half["maintenance_margin_before"] == pytest.approx(mm * 1.25, rel=1e-12)
    assert half["maintenance_margin_after"] == pytest.approx(mm / 2 * 1.25, rel=1e-12)
    assert half["ratio_after"] == pytest.approx(equity / (mm / 2 * 1.25), rel=1e-12)
    assert half["ratio_before"] == pytest.approx(equity / (mm * 1.25), rel=1e-12)
    addons = g.book_risk()["margin"]["maintenance_addons"]
    eth, sol = mark(g, "ETHUSDT"), mark(g, "SOLUSDT")
    expected = 0.25 * (mm + 5 * eth * 0.005 + 100 * sol * 0.01)  # first brackets: mmr 0.4 %, 0.5 %, 1 %
    assert addons == {"volatility": pytest.approx(expected, rel=1e-12), "impact": None}


def test_the_impact_addon_is_revalued_at_the_shocked_notional(tmp_path):
    g = small_guard(tmp_path, cfg=addons_config(impact=True), accounts=(SOLO,))
    m = mark(g, "BTCUSDT")

    def impact(notional):  # 0.01 * k * sqrt(notional / depth) * notional, BTCUSDT depth 60,000,000, k 1
        return 0.01 * np.sqrt(notional / 60_000_000) * notional

    assert g.book_risk()["margin"]["maintenance_addons"]["impact"] == pytest.approx(impact(0.5 * m), rel=1e-12)
    out = g.stress({"moves": {"*": -0.1}})["accounts"][0]
    n = 0.45 * m
    assert out["ratio_after"] == pytest.approx(
        (10_000 + 0.5 * (0.9 * m - 60_000)) / (n * 0.004 * 1.25 + impact(n)), rel=1e-12
    )


def test_the_before_figures_are_the_guards_own_ratio_with_addons(tmp_path):
    # the guard divides by venue MM + the enabled add-ons (cross accounts): "before" is the same figure
    g = small_guard(tmp_path, cfg=addons_config(impact=True))
    for a in g.stress({"moves": {"*": 0.0}})["accounts"]:
        assert a["ratio_before"] == pytest.approx(float(g.book.ratio[g.book.account_index[a["account"]]]), rel=1e-12)
    assert g.scenario_grid("sol", [0.0], [0.0])["ratio"][0][0] == pytest.approx(float(g.book.ratio[2]), rel=1e-12)
    assert g.what_if("bear", "ETHUSDT", "buy", 1.0)["ratio_before"] == pytest.approx(float(g.book.ratio[1]), rel=1e-12)


def test_a_held_instrument_without_volatility_gives_null_not_zero(tmp_path, monkeypatch):
    g = small_guard(tmp_path)
    known = risk_view.daily_volatility

    def without_sol(g):
        vol = known(g)
        vol[g.book.symbol_index["SOLUSDT"]] = np.nan
        return vol

    monkeypatch.setattr(risk_view, "daily_volatility", without_sol)
    book = g.book_risk()
    assert book["var"]["parametric"] is None and book["es"]["monte_carlo"] is None
    assert g.account_detail("sol")["risk"]["var_parametric"] is None
    assert g.account_detail("solo")["risk"]["var_parametric"] > 0  # it holds no SOL


def test_funding_from_the_live_feed_drains_the_projected_ratio(tmp_path):
    from engine.connectors.base import BinanceConfig, MergedPriceSource
    from engine.connectors.binance import BinanceMarkPriceSource
    from tests.engine.connectors.support import load_doc_json

    g = small_guard(tmp_path, accounts=(SOLO,))
    assert g.account_detail("solo")["risk"]["funding_per_hour"] is None  # the simulator has no funding
    feed = BinanceMarkPriceSource(BinanceConfig(), [i.symbol for i in g.book.instruments], g.clock)
    feed.on_message(json.dumps(load_doc_json("mark_price_stream.jsonc")))  # BTCUSDT r = 0.00038167
    g.live_feed = MergedPriceSource([feed], len(g.book.instruments))  # read by the projection only here
    a = g.account_index("solo")
    ratio, now = float(g.book.ratio[a]), g.clock.now()
    g.history[a].clear()
    g.history[a].extend((now - 10.0 * k, ratio) for k in (2, 1, 0))  # a flat trend: funding alone
    g.version += 1
    risk = g.account_detail("solo")["risk"]
    drain = 0.5 * mark(g, "BTCUSDT") * 0.00038167 / 8  # a long pays a positive rate, 8 h interval
    assert risk["funding_per_hour"] == pytest.approx(drain, rel=1e-12)
    per_hour = drain / float(g.book.acct_mm[a])  # ratio units
    assert risk["hours_to"]["LIQUIDATION"] == pytest.approx((ratio - float(g.book.liquidation[a])) / per_hour)
