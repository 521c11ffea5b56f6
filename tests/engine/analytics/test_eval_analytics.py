"""`capguard eval` with the optional analytics block, end to end on a JSON string."""

from __future__ import annotations

import copy
import json
import math
import re

import pytest

from engine.evaluate import evaluate, load_snapshot
from engine.model import InputError

Z95 = 1.6448536269514722  # N^-1(0.95)

# BTC closes: returns +2%, -3%, +3%, -5%, +2%. ETH closes: +2%, -2%, +2%, -5%, +2%.
BTC_CLOSES = [60_000.0, 61_200.0, 59_364.0, 61_144.92, 58_087.674, 59_249.42748]
ETH_CLOSES = [3_000.0, 3_060.0, 2_998.8, 3_058.776, 2_905.8372, 2_963.953944]

SNAPSHOT = {
    "instruments": [
        {
            "symbol": "BTCUSDT",
            "underlying": "BTC",
            "group": "majors",
            "daily_volatility": 0.05,
            "price_scan_range": 3_000.0,
            "volatility_scan_range": 0.25,
            "brackets": [{"floor": 0, "mmr": 0.004, "max_leverage": 125}],
        },
        {
            "symbol": "ETHUSDT",
            "underlying": "ETH",
            "group": "majors",
            "brackets": [{"floor": 0, "mmr": 0.005, "max_leverage": 100}],
        },
        {"symbol": "SOLUSDT", "brackets": [{"floor": 0, "mmr": 0.01, "max_leverage": 50}]},
    ],
    "accounts": [
        {"id": "btc", "wallet_balance": 10_000, "positions": [{"symbol": "BTCUSDT", "qty": 1, "entry_price": 60_000}]},
        {
            "id": "mixed",
            "wallet_balance": 50_000,
            "positions": [
                {"symbol": "BTCUSDT", "qty": -1, "entry_price": 60_000},
                {"symbol": "ETHUSDT", "qty": 20, "entry_price": 3_000},
            ],
        },
        {"id": "sol", "wallet_balance": 1_000, "positions": [{"symbol": "SOLUSDT", "qty": 100, "entry_price": 150}]},
        {"id": "flat", "wallet_balance": 5_000, "positions": []},
    ],
    "prices": {"BTCUSDT": 60_000, "ETHUSDT": 3_000, "SOLUSDT": 150},
    "history": {"BTCUSDT": BTC_CLOSES, "ETHUSDT": ETH_CLOSES},
    "analytics": {"confidence": 0.95, "horizon_days": 1, "mc_paths": 40_000, "seed": 1},
}


def run(snapshot: dict) -> dict:
    out = evaluate(load_snapshot(json.dumps(snapshot)))
    return json.loads(json.dumps(out, allow_nan=False))  # plain JSON: no NaN or infinities


def test_eval_analytics_end_to_end():
    out = run(SNAPSHOT)
    by_id = {a["id"]: a for a in out["accounts"]}
    btc = by_id["btc"]["analytics"]
    assert set(btc) == {
        "var_parametric",
        "var_historical",
        "var_monte_carlo",
        "es_historical",
        "scenario_margin",
        "risk_array",
        "max_drawdown",
        "liquidation_probability",
    }
    # 60,000 long, 5% a day: VaR95 = 1.64485 * 3,000 = 4,934.56
    assert btc["var_parametric"] == pytest.approx(Z95 * 3_000.0, rel=1e-12)
    # losses -1,200, 1,800, -1,800, 3,000, -1,200; 95% of 5: k = 5, the largest -> 3,000
    assert btc["var_historical"] == pytest.approx(3_000.0, rel=1e-9)
    assert btc["es_historical"] == pytest.approx(3_000.0, rel=1e-9)
    assert btc["var_monte_carlo"] == pytest.approx(btc["var_parametric"], rel=0.03)
    # scan range 3,000 given: long 1 -> 0, 0, -1,000 x2, 1,000 x2, ... extremes -/+ 3 * 3,000 * 0.3
    assert btc["risk_array"] == pytest.approx(
        [0, 0, -1000, -1000, 1000, 1000, -2000, -2000, 2000, 2000, -3000, -3000, 3000, 3000, -2700, 2700], rel=1e-12
    )
    assert btc["scenario_margin"] == pytest.approx(3_000.0, rel=1e-12)
    # equity path 10,000 + close - 60,000: peak 11,200, trough after it 8,087.674 -> 0.27789
    assert btc["max_drawdown"] == pytest.approx(1 - 8_087.674 / 11_200.0, rel=1e-9)
    # liquidation price: 10,000 + P - 60,000 = 0.004 P -> P = 50,200.80; 2 N(-ln(60,000 / P) / 0.05)
    lp = 50_000.0 / 0.996
    expected = math.erfc(math.log(60_000.0 / lp) / 0.05 / math.sqrt(2.0))
    assert btc["liquidation_probability"] == pytest.approx(expected, rel=1e-9)


def test_volatility_and_correlation_come_from_the_history_when_not_given():
    out = run(SNAPSHOT)
    mixed = {a["id"]: a for a in out["accounts"]}["mixed"]["analytics"]
    # ETH vol from its history: sqrt((0.02^2 * 4 + 0.05^2) / 5) = sqrt(0.00082) = 0.028636
    # correlation from the two histories (zero-mean): sum r_b r_e / sqrt(sum r_b^2 sum r_e^2)
    rb = [0.02, -0.03, 0.03, -0.05, 0.02]
    re = [0.02, -0.02, 0.02, -0.05, 0.02]
    rho = sum(a * b for a, b in zip(rb, re, strict=True)) / math.sqrt(sum(a * a for a in rb) * sum(b * b for b in re))
    sb, se = 0.05, math.sqrt(0.00082)
    eb, ee = -60_000.0, 60_000.0
    sigma = math.sqrt((eb * sb) ** 2 + (ee * se) ** 2 + 2 * rho * eb * ee * sb * se)
    assert mixed["var_parametric"] == pytest.approx(Z95 * sigma, rel=1e-9)
    # scenario margin per underlying: BTC short 1 * 3,000; ETH 20 * (3,000 * 1.64485 * 0.028636)
    assert mixed["scenario_margin"] == pytest.approx(3_000.0 + 20 * 3_000.0 * Z95 * se, rel=1e-9)
    # historical: PnL_t = -60,000 rb + 60,000 re = 0, 600, -600, 0, 0 -> losses 0, -600, 600, 0, 0: VaR 600
    assert mixed["var_historical"] == pytest.approx(600.0, rel=1e-9)


def test_figures_without_inputs_are_null_and_an_empty_account_is_zero():
    out = run(SNAPSHOT)
    by_id = {a["id"]: a for a in out["accounts"]}
    assert all(v is None for v in by_id["sol"]["analytics"].values())  # SOL has neither volatility nor history
    flat = by_id["flat"]["analytics"]
    assert flat["risk_array"] == [0.0] * 16
    assert {k: v for k, v in flat.items() if k != "risk_array"} == dict.fromkeys(
        [
            "var_parametric",
            "var_historical",
            "var_monte_carlo",
            "es_historical",
            "scenario_margin",
            "max_drawdown",
            "liquidation_probability",
        ],
        0.0,
    )
    # the book holds SOL too, so its figures are unknown; without the SOL account they are not
    assert set(out["analytics"]) == {"var_parametric", "var_historical", "var_monte_carlo", "es_historical"}
    assert all(v is None for v in out["analytics"].values())
    no_sol = copy.deepcopy(SNAPSHOT)
    no_sol["accounts"] = [a for a in no_sol["accounts"] if a["id"] != "sol"]
    book_figures = run(no_sol)["analytics"]
    # net book: BTC 0 (long 1, short 1), ETH +60,000 at 2.8636%: VaR95 = 1.64485 * 1,718.14
    assert book_figures["var_parametric"] == pytest.approx(Z95 * 60_000.0 * math.sqrt(0.00082), rel=1e-9)


def test_without_analytics_the_output_is_unchanged():
    with_block = run(SNAPSHOT)
    plain = copy.deepcopy(SNAPSHOT)
    del plain["analytics"]
    without = run(plain)
    assert set(without) == {"accounts"}
    stripped = [{k: v for k, v in a.items() if k != "analytics"} for a in with_block["accounts"]]
    assert without["accounts"] == stripped
    bare = copy.deepcopy(plain)
    del bare["history"]
    for inst in bare["instruments"]:
        for key in ("daily_volatility", "price_scan_range", "volatility_scan_range"):
            inst.pop(key, None)
    assert run(bare) == without


def test_student_t_monte_carlo_and_scan_by_portfolio_are_accepted():
    snap = copy.deepcopy(SNAPSHOT)
    snap["analytics"].update({"distribution": "student_t", "degrees_of_freedom": 4, "scan_by": "portfolio"})
    mixed = {a["id"]: a for a in run(snap)["accounts"]}["mixed"]["analytics"]
    assert mixed["var_monte_carlo"] > 0
    assert mixed["scenario_margin"] == pytest.approx(max(0.0, *mixed["risk_array"]), rel=1e-12)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s["history"].update({"XRPUSDT": [1.0, 2.0]}), "history: unknown symbol"),
        (lambda s: s["history"]["BTCUSDT"].__setitem__(2, -1.0), "BTCUSDT close 2"),
        (lambda s: s["analytics"].update({"confidence": 1.5}), "analytics.confidence"),
        (lambda s: s["analytics"].update({"paths": 10}), "analytics.paths"),
        (lambda s: s["instruments"][0].update({"daily_volatility": -0.1}), "instruments[0] (BTCUSDT).daily_volatility"),
        (lambda s: s["instruments"][0].update({"volatility": 0.1}), "instruments[0] (BTCUSDT).volatility"),
    ],
)
def test_bad_analytics_inputs_are_refused_whole(change, message):
    snap = copy.deepcopy(SNAPSHOT)
    change(snap)
    with pytest.raises(InputError, match=re.escape(message)):
        evaluate(load_snapshot(json.dumps(snap)))
