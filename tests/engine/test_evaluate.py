"""`capguard eval`: engine.evaluate.load_snapshot / evaluate on JSON text.

Expected numbers are worked out by hand in the comments.
"""

from __future__ import annotations

import json
import math

import pytest

from engine.evaluate import evaluate, load_snapshot
from engine.model import InputError

BTC_BRACKETS = [
    {"floor": 0, "mmr": 0.004, "max_leverage": 125},
    {"floor": 50_000, "mmr": 0.005, "max_leverage": 100},
    {"floor": 250_000, "mmr": 0.01, "max_leverage": 50},
    {"floor": 1_000_000, "mmr": 0.025, "max_leverage": 20},
]
ACCOUNT_KEYS = {
    "id",
    "equity",
    "unrealized_pnl",
    "initial_margin",
    "maintenance_margin",
    "free_margin",
    "available_margin",
    "margin_ratio",
    "utilization",
    "leverage",
    "level",
    "positions",
}
POSITION_KEYS = {
    "symbol",
    "qty",
    "notional",
    "unrealized_pnl",
    "mmr",
    "maintenance_amount",
    "maintenance_margin",
    "initial_margin",
    "liquidation_price",
    "liquidation_distance_pct",
}


def snapshot(accounts, prices, instruments=None, **extra) -> str:
    doc = {
        "instruments": instruments or [{"symbol": "BTCUSDT", "brackets": BTC_BRACKETS}],
        "accounts": accounts,
        "prices": prices,
        **extra,
    }
    return json.dumps(doc)


def run(text: str) -> dict:
    out = evaluate(load_snapshot(text))
    json.dumps(out, allow_nan=False)  # plain JSON: no NaN or infinities anywhere
    return out


HALF_BTC = {
    "id": "a1",
    "wallet_balance": 10_000,
    "positions": [{"symbol": "BTCUSDT", "qty": 0.5, "entry_price": 60_000}],
}


def test_the_half_btc_snapshot_evaluates_to_the_documented_figures():
    # 0.5 BTC @ 60_000, mark 61_000, wallet 10_000:
    #   notional 30_500 (tier 0: mmr 0.004, cum 0); upnl 500; equity 10_500
    #   MM 122; ratio 10_500 / 122 = 86.0655737704918; IM 30_500 / 125 = 244
    #   free 10_500 - 244 = 10_256; utilization 244 / 10_500; leverage 30_500 / 10_500
    #   LP -20_000 / -0.498 = 40_160.64257028112; distance |61_000 - LP| / 61_000 = 34.1628...%
    out = run(snapshot([HALF_BTC], {"BTCUSDT": 61_000}))
    (acct,) = out["accounts"]
    assert set(out) == {"accounts"}
    assert set(acct) == ACCOUNT_KEYS
    assert acct["id"] == "a1"
    assert acct["equity"] == pytest.approx(10_500)
    assert acct["unrealized_pnl"] == pytest.approx(500)
    assert acct["maintenance_margin"] == pytest.approx(122)
    assert acct["initial_margin"] == pytest.approx(244)
    assert acct["free_margin"] == pytest.approx(10_256)
    assert acct["available_margin"] == pytest.approx(10_256)
    assert acct["margin_ratio"] == pytest.approx(86.0655737704918, rel=1e-12)
    assert acct["utilization"] == pytest.approx(244 / 10_500)
    assert acct["leverage"] == pytest.approx(30_500 / 10_500)
    assert acct["level"] == "SAFE"
    (p,) = acct["positions"]
    assert set(p) == POSITION_KEYS
    assert p["symbol"] == "BTCUSDT" and p["qty"] == 0.5
    assert p["notional"] == pytest.approx(30_500)
    assert p["unrealized_pnl"] == pytest.approx(500)
    assert p["mmr"] == 0.004 and p["maintenance_amount"] == 0
    assert p["maintenance_margin"] == pytest.approx(122)
    assert p["initial_margin"] == pytest.approx(244)
    assert p["liquidation_price"] == pytest.approx(40_160.64257028112, rel=1e-12)
    assert p["liquidation_distance_pct"] == pytest.approx((61_000 - 40_160.64257028112) / 61_000 * 100)


DOC_EXAMPLE = """
{"instruments": [{"symbol": "BTCUSDT", "contract_size": 1,
   "brackets": [{"floor": 0, "cap": 50000, "mmr": 0.004, "max_leverage": 125},
                {"floor": 50000, "cap": 250000, "mmr": 0.005, "max_leverage": 100, "maintenance_amount": 50}]}],
 "accounts": [{"id": "acct-1", "wallet_balance": 10000, "margin_mode": "cross",
   "positions": [{"symbol": "BTCUSDT", "qty": 0.5, "entry_price": 60000, "isolated_margin": null}],
   "open_orders": []}],
 "prices": {"BTCUSDT": 61000},
 "thresholds": {"warning": 2.0, "critical": 1.5, "liquidation": 1.2}}
"""


def test_the_example_in_docs_eval_gives_its_stated_figures():
    # docs/eval.md: equity 10_500, MM 122, ratio 86.07, IM 244, LP 40_160.64 (worked there by hand)
    (acct,) = run(DOC_EXAMPLE)["accounts"]
    assert acct["id"] == "acct-1"
    assert acct["equity"] == pytest.approx(10_500)
    assert acct["maintenance_margin"] == pytest.approx(122)
    assert round(acct["margin_ratio"], 2) == 86.07
    assert acct["initial_margin"] == pytest.approx(244)
    assert round(acct["positions"][0]["liquidation_price"], 2) == 40_160.64


def test_a_quantity_that_is_not_a_number_is_refused_as_documented():
    text = DOC_EXAMPLE.replace('"qty": 0.5', '"qty": "half"')
    with pytest.raises(InputError) as exc:
        load_snapshot(text)
    assert str(exc.value).startswith("accounts[0] (acct-1).positions[0] (BTCUSDT).qty: Input should be a valid number")
    assert "\n" not in str(exc.value)  # one problem, one line


def test_the_bracket_and_its_maintenance_amount_are_reported():
    # 5 BTC at 60_000: notional 300_000 -> tier 2 (mmr 0.01), cum 250_000*0.005 + 50 = 1_300
    #   MM 3_000 - 1_300 = 1_700
    acct = {"id": "a1", "wallet_balance": 60_000, "positions": [{"symbol": "BTCUSDT", "qty": 5, "entry_price": 60_000}]}
    (p,) = run(snapshot([acct], {"BTCUSDT": 60_000}))["accounts"][0]["positions"]
    assert p["mmr"] == 0.01
    assert p["maintenance_amount"] == pytest.approx(1_300)
    assert p["maintenance_margin"] == pytest.approx(1_700)


def test_an_account_without_positions_has_a_null_ratio_and_is_safe():
    out = run(snapshot([{"id": "empty", "wallet_balance": 1_000}], {}))
    (acct,) = out["accounts"]
    assert acct["margin_ratio"] is None
    assert acct["level"] == "SAFE"
    assert acct["positions"] == []
    assert acct["maintenance_margin"] == 0 and acct["equity"] == 1_000


def test_a_position_with_no_liquidation_price_reports_nulls():
    acct = {
        "id": "a1",
        "wallet_balance": 40_000,
        "positions": [{"symbol": "BTCUSDT", "qty": 0.5, "entry_price": 60_000}],
    }
    (p,) = run(snapshot([acct], {"BTCUSDT": 61_000}))["accounts"][0]["positions"]
    assert p["liquidation_price"] is None
    assert p["liquidation_distance_pct"] is None


def test_available_margin_subtracts_only_exposure_increasing_orders():
    # long 1 BTC @ 60_000, mark 60_000, wallet 10_000: IM 600, free 9_400
    #   buy 0.5 @ 59_000: reserves 0.5 * 59_000 / 100 = 295; reduce-only sell: 0;
    #   sell 0.4 (smaller than the long): 0; available 9_400 - 295 = 9_105
    acct = {
        "id": "a1",
        "wallet_balance": 10_000,
        "positions": [{"symbol": "BTCUSDT", "qty": 1, "entry_price": 60_000}],
        "open_orders": [
            {"symbol": "BTCUSDT", "side": "buy", "qty": 0.5, "price": 59_000},
            {"symbol": "BTCUSDT", "side": "sell", "qty": 0.5, "price": 62_000, "reduce_only": True},
            {"symbol": "BTCUSDT", "side": "sell", "qty": 0.4, "price": 62_000},
        ],
    }
    (out,) = run(snapshot([acct], {"BTCUSDT": 60_000}))["accounts"]
    assert out["free_margin"] == pytest.approx(9_400)
    assert out["available_margin"] == pytest.approx(9_105)


def test_an_instrument_without_max_leverage_gives_null_initial_margin_figures():
    instruments = [{"symbol": "X", "brackets": [{"floor": 0, "mmr": 0.01}]}]
    acct = {"id": "a1", "wallet_balance": 1_000, "positions": [{"symbol": "X", "qty": 10, "entry_price": 100}]}
    (out,) = run(snapshot([acct], {"X": 100}, instruments=instruments))["accounts"]
    for key in ("initial_margin", "free_margin", "available_margin", "utilization"):
        assert out[key] is None, key
    assert out["positions"][0]["initial_margin"] is None
    # MM is known: 1_000 * 0.01 = 10; ratio 1_000 / 10 = 100
    assert out["margin_ratio"] == pytest.approx(100)


def test_thresholds_in_the_snapshot_are_used_as_given():
    # ratio 86.07 with a warning threshold of 100 -> WARNING
    thresholds = {"warning": 100, "critical": 50, "liquidation": 10}
    (acct,) = run(snapshot([HALF_BTC], {"BTCUSDT": 61_000}, thresholds=thresholds))["accounts"]
    assert acct["level"] == "WARNING"


# ---------------------------------------------------------------------------- refusals
def test_a_missing_price_for_a_held_symbol_is_refused():
    with pytest.raises(InputError, match=r"no price for held symbol.*BTCUSDT"):
        run(snapshot([HALF_BTC], {}))


def test_invalid_json_is_refused_with_a_clear_message():
    with pytest.raises(InputError, match="snapshot is not valid JSON"):
        load_snapshot('{"instruments": [')


def test_a_non_finite_quantity_is_refused_naming_the_record():
    text = snapshot([HALF_BTC], {"BTCUSDT": 61_000}).replace('"qty": 0.5', '"qty": NaN')
    where = r"accounts\[0\] \(a1\)\.positions\[0\] \(BTCUSDT\)\.qty"
    with pytest.raises(InputError, match=where + ": qty must be a finite number"):
        load_snapshot(text)


@pytest.mark.parametrize("price", ["0", "-1", "NaN", "Infinity"])
def test_a_bad_price_is_refused(price):
    text = snapshot([HALF_BTC], {"BTCUSDT": 1}).replace('"BTCUSDT": 1}', f'"BTCUSDT": {price}}}')
    with pytest.raises(InputError, match="price for BTCUSDT"):
        run(text)


def test_a_price_for_an_unknown_symbol_is_refused():
    with pytest.raises(InputError, match="unknown symbol 'ETHUSDT'"):
        run(snapshot([HALF_BTC], {"BTCUSDT": 61_000, "ETHUSDT": 3_000}))


def test_a_position_in_an_unknown_symbol_is_refused():
    acct = {**HALF_BTC, "positions": [{"symbol": "DOGE", "qty": 1, "entry_price": 1}]}
    with pytest.raises(InputError, match="account a1 position 0: unknown symbol 'DOGE'"):
        run(snapshot([acct], {"BTCUSDT": 61_000}))


def test_duplicate_account_ids_are_refused():
    with pytest.raises(InputError, match="account a1: duplicate account id"):
        run(snapshot([HALF_BTC, HALF_BTC], {"BTCUSDT": 61_000}))


def test_gapped_brackets_are_refused_naming_the_instrument():
    instruments = [
        {"symbol": "BTCUSDT", "brackets": [{"floor": 0, "cap": 10, "mmr": 0.01}, {"floor": 20, "mmr": 0.02}]}
    ]
    with pytest.raises(InputError, match=r"instruments\[0\] \(BTCUSDT\).*instrument BTCUSDT: gap"):
        load_snapshot(snapshot([], {}, instruments=instruments))


def test_a_zero_contract_size_is_refused_naming_the_instrument():
    instruments = [{"symbol": "BTCUSDT", "contract_size": 0, "brackets": BTC_BRACKETS}]
    with pytest.raises(InputError, match=r"instruments\[0\] \(BTCUSDT\)\.contract_size"):
        load_snapshot(snapshot([], {}, instruments=instruments))


def test_unknown_fields_are_refused():
    with pytest.raises(InputError, match=r"accounts\[0\] \(a1\)\.leverage_hint"):
        load_snapshot(snapshot([{**HALF_BTC, "leverage_hint": 3}], {"BTCUSDT": 61_000}))


def test_evaluation_is_plain_json_without_infinities():
    out = run(snapshot([HALF_BTC, {"id": "b", "wallet_balance": 5}], {"BTCUSDT": 61_000}))
    assert out["accounts"][1]["margin_ratio"] is None
    assert not any(isinstance(v, float) and not math.isfinite(v) for a in out["accounts"] for v in a.values())
