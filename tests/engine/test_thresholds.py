"""Dynamic thresholds: each factor's direction, the cap, the invariants, overrides and explain().

Unless a test says otherwise the base is the seed ladder (warning 2.0, critical 1.5,
liquidation 1.2) and the configuration is CFG below; every threshold = base * (1 + A) where
A = clip(sum of the factor adjustments, -max_adjust, +max_adjust), then clamped bottom up.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.levels import Thresholds
from engine.thresholds import (
    DynamicThresholdsConfig,
    account_volatility,
    drawdown,
    effective_thresholds,
    explain,
    realised_volatility,
    unknown_risk_classes,
)

CONFIG_TOML = Path(__file__).resolve().parents[2] / "config.toml"

BASE = Thresholds(warning=2.0, critical=1.5, liquidation=1.2)

CFG_DATA = {
    "enabled": True,
    "size_bands": [{"min_equity": 0, "adjust": 0.0}, {"min_equity": 1_000_000, "adjust": 0.10}],
    "risk_classes": {"conservative": -0.05, "standard": 0.0, "aggressive": 0.10},
    "volatility": {"elevated_above": 0.8, "stressed_above": 1.5, "elevated": 0.05, "stressed": 0.20},
    "drawdown_bands": [{"min_drawdown": 0.10, "adjust": 0.05}, {"min_drawdown": 0.25, "adjust": 0.15}],
    "floors": {"warning": 1.5, "critical": 1.2, "liquidation": 1.1},
    "venue_margin": 0.05,
    "min_gap": 0.1,
    "max_adjust": 0.4,
}
CFG = DynamicThresholdsConfig.model_validate(CFG_DATA)


def cfg_with(**changes) -> DynamicThresholdsConfig:
    return DynamicThresholdsConfig.model_validate({**CFG_DATA, **changes})


def run(cfg=CFG, base=BASE, equity=(100_000.0,), risk=("standard",), vol=(0.5,), dd=(0.0,), overrides=None):
    """effective_thresholds over accounts given as tuples; returns an (n, 3) array (w, c, l)."""
    w, c, lq = effective_thresholds(
        base,
        cfg,
        np.array(equity, dtype=float),
        np.array(risk, dtype=object),
        np.array(vol, dtype=float),
        np.array(dd, dtype=float),
        overrides,
    )
    return np.column_stack([w, c, lq])


def approx_rows(*rows):
    return pytest.approx(np.array(rows, dtype=float), rel=1e-12, abs=1e-12)


# ---------------------------------------------------------------------------------------
# Each factor, in its stated direction
# ---------------------------------------------------------------------------------------


def test_a_bigger_account_gets_higher_thresholds():
    # 100k is in the 0 band (adjust 0): the seed ladder.
    # 2M is in the 1M band (+0.10): 2.0*1.1 = 2.2, 1.5*1.1 = 1.65, 1.2*1.1 = 1.32.
    out = run(equity=(100_000.0, 2_000_000.0), risk=("standard",) * 2, vol=(0.5,) * 2, dd=(0.0,) * 2)
    assert out == approx_rows([2.0, 1.5, 1.2], [2.2, 1.65, 1.32])


def test_an_account_exactly_on_a_size_band_edge_takes_that_band():
    # min_equity is inclusive: 1_000_000 exactly gets +0.10, a cent less gets 0.
    out = run(equity=(999_999.99, 1_000_000.0), risk=("standard",) * 2, vol=(0.5,) * 2, dd=(0.0,) * 2)
    assert out == approx_rows([2.0, 1.5, 1.2], [2.2, 1.65, 1.32])


def test_aggressive_strategies_get_higher_thresholds_than_standard_than_conservative():
    # conservative -0.05: 2.0*0.95 = 1.9, 1.5*0.95 = 1.425, 1.2*0.95 = 1.14 (all above the floors)
    # standard 0: the seed ladder; aggressive +0.10: 2.2, 1.65, 1.32
    out = run(equity=(1e5,) * 3, risk=("conservative", "standard", "aggressive"), vol=(0.5,) * 3, dd=(0.0,) * 3)
    assert out == approx_rows([1.9, 1.425, 1.14], [2.0, 1.5, 1.2], [2.2, 1.65, 1.32])
    assert np.all(out[2] > out[1]) and np.all(out[1] > out[0])


def test_stressed_markets_raise_thresholds_more_than_elevated_than_calm():
    # 0.5 calm (0); 1.0 elevated (+0.05): 2.1, 1.575, 1.26; 2.0 stressed (+0.20): 2.4, 1.8, 1.44
    out = run(equity=(1e5,) * 3, risk=("standard",) * 3, vol=(0.5, 1.0, 2.0), dd=(0.0,) * 3)
    assert out == approx_rows([2.0, 1.5, 1.2], [2.1, 1.575, 1.26], [2.4, 1.8, 1.44])


def test_volatility_exactly_on_a_regime_boundary_stays_in_the_calmer_regime():
    # "elevated_above" is strict: 0.8 is calm, 1.5 is elevated (+0.05).
    out = run(equity=(1e5,) * 2, risk=("standard",) * 2, vol=(0.8, 1.5), dd=(0.0,) * 2)
    assert out == approx_rows([2.0, 1.5, 1.2], [2.1, 1.575, 1.26])


def test_a_deeper_drawdown_raises_thresholds():
    # 0 and 0.05: below the first band (0); 0.10 exactly: +0.05 -> 2.1, 1.575, 1.26;
    # 0.30: the 0.25 band, +0.15 -> 2.3, 1.725, 1.38
    out = run(equity=(1e5,) * 4, risk=("standard",) * 4, vol=(0.5,) * 4, dd=(0.0, 0.05, 0.10, 0.30))
    assert out == approx_rows([2.0, 1.5, 1.2], [2.0, 1.5, 1.2], [2.1, 1.575, 1.26], [2.3, 1.725, 1.38])


def test_factors_add_up_and_the_total_is_capped_at_max_adjust():
    # size +0.10, aggressive +0.10, stressed +0.20, drawdown 0.30 +0.15: total 0.55, capped at 0.40
    # -> 2.0*1.4 = 2.8, 1.5*1.4 = 2.1, 1.2*1.4 = 1.68.
    # Under the cap: size +0.10 and elevated +0.05 = 0.15 -> 2.3, 1.725, 1.38.
    out = run(equity=(2e6, 2e6), risk=("aggressive", "standard"), vol=(2.0, 1.0), dd=(0.30, 0.0))
    assert out == approx_rows([2.8, 2.1, 1.68], [2.3, 1.725, 1.38])


def test_an_unknown_risk_class_adjusts_by_zero_and_is_reported():
    out = run(equity=(1e5,) * 2, risk=("standard", "yolo"), vol=(0.5,) * 2, dd=(0.0,) * 2)
    assert out == approx_rows([2.0, 1.5, 1.2], [2.0, 1.5, 1.2])
    assert unknown_risk_classes(CFG, np.array(["standard", "yolo", "yolo", "carry"], dtype=object)) == [
        "carry",
        "yolo",
    ]
    risk = explain(BASE, CFG, 1e5, "yolo", 0.5, 0.0)["factors"][1]
    assert risk["name"] == "risk_class" and risk["adjust"] == 0.0 and risk["known"] is False
    assert "yolo" in risk["note"]


def test_a_missing_input_contributes_no_adjustment():
    # NaN equity, volatility and drawdown: each factor 0, the seed ladder.
    out = run(equity=(math.nan,), risk=("standard",), vol=(math.nan,), dd=(math.nan,))
    assert out == approx_rows([2.0, 1.5, 1.2])


def test_with_the_section_disabled_every_account_gets_the_base_exactly():
    off = cfg_with(enabled=False)
    base = Thresholds(warning=1.3, critical=1.12, liquidation=1.01)  # even below floors and venue margin
    out = run(
        cfg=off,
        base=base,
        equity=(2e6, 1e4, 5e6),
        risk=("aggressive", "conservative", "yolo"),
        vol=(2.0, 0.1, 1.0),
        dd=(0.3, 0.0, 0.5),
    )
    assert out.tolist() == [[1.3, 1.12, 1.01]] * 3


# ---------------------------------------------------------------------------------------
# Invariants enforced by construction
# ---------------------------------------------------------------------------------------


def test_a_low_base_pushed_down_further_is_held_at_the_floors():
    # base 1.3 / 1.15 / 1.02, conservative (-0.05): raw 1.235, 1.0925, 0.969
    # liquidation = max(0.969, floor 1.1, venue 1.05) = 1.1
    # critical    = max(1.0925, floor 1.2, 1.1 + 0.1) = 1.2
    # warning     = max(1.235, floor 1.5, 1.2 + 0.1) = 1.5
    base = Thresholds(warning=1.3, critical=1.15, liquidation=1.02)
    out = run(base=base, risk=("conservative",))
    assert out == approx_rows([1.5, 1.2, 1.1])
    reasons = explain(base, CFG, 1e5, "conservative", 0.5, 0.0)["clamped"]
    assert any("floors.liquidation" in r for r in reasons)
    assert any("floors.warning" in r for r in reasons)


def test_thresholds_closer_than_min_gap_are_spread_upwards():
    # floors low (1.0 / 1.01 / 1.02), min_gap 0.15, base 1.3 / 1.2 / 1.1, no adjustment:
    # liquidation = max(1.1, 1.05) = 1.1; critical = max(1.2, 1.1 + 0.15) = 1.25;
    # warning = max(1.3, 1.25 + 0.15) = 1.4
    cfg = cfg_with(min_gap=0.15, floors={"warning": 1.02, "critical": 1.01, "liquidation": 1.0})
    base = Thresholds(warning=1.3, critical=1.2, liquidation=1.1)
    assert run(cfg=cfg, base=base) == approx_rows([1.4, 1.25, 1.1])


def test_the_liquidation_threshold_never_falls_below_the_venue_margin():
    # floors below 1.0, venue_margin 0.05, base liquidation 1.0 * (1 - 0.05) = 0.95 -> 1.05;
    # critical = max(1.3 * 0.95 = 1.235, 1.05 + 0.1) = 1.235; warning = 1.6 * 0.95 = 1.52
    cfg = cfg_with(floors={"warning": 0.9, "critical": 0.8, "liquidation": 0.5})
    base = Thresholds(warning=1.6, critical=1.3, liquidation=1.0)
    assert run(cfg=cfg, base=base, risk=("conservative",)) == approx_rows([1.52, 1.235, 1.05])


names = st.sampled_from(["conservative", "standard", "aggressive", "carry", "hft"])
ratio = st.floats(min_value=0.01, max_value=10.0, allow_nan=False)


@st.composite
def thresholds_st(draw):
    lo, mid, hi = sorted(draw(st.lists(ratio, min_size=3, max_size=3, unique=True)))
    return Thresholds(warning=hi, critical=mid, liquidation=lo)


@st.composite
def configs(draw):
    adjust = st.floats(min_value=0.0, max_value=1.0)
    edges = sorted(draw(st.lists(st.floats(-1e4, 1e7), max_size=4, unique=True)))
    size_adj = sorted(draw(st.lists(adjust, min_size=len(edges), max_size=len(edges))))
    dd_edges = sorted(draw(st.lists(st.floats(0.0, 0.99), max_size=4, unique=True)))
    dd_adj = sorted(draw(st.lists(adjust, min_size=len(dd_edges), max_size=len(dd_edges))))
    elevated_above, stressed_above = sorted(draw(st.lists(st.floats(0.01, 10.0), min_size=2, max_size=2, unique=True)))
    elevated, stressed = sorted(draw(st.lists(adjust, min_size=2, max_size=2)))
    floors = sorted(draw(st.lists(st.floats(0.01, 5.0), min_size=3, max_size=3, unique=True)))
    return DynamicThresholdsConfig.model_validate(
        {
            "enabled": True,
            "size_bands": [{"min_equity": e, "adjust": a} for e, a in zip(edges, size_adj, strict=True)],
            "risk_classes": draw(st.dictionaries(names, st.floats(-1.0, 1.0), max_size=4)),
            "volatility": {
                "elevated_above": elevated_above,
                "stressed_above": stressed_above,
                "elevated": elevated,
                "stressed": stressed,
            },
            "drawdown_bands": [{"min_drawdown": e, "adjust": a} for e, a in zip(dd_edges, dd_adj, strict=True)],
            "floors": {"liquidation": floors[0], "critical": floors[1], "warning": floors[2]},
            "venue_margin": draw(st.floats(0.0, 1.0)),
            "min_gap": draw(st.floats(0.001, 1.0)),
            "max_adjust": draw(st.floats(0.0, 0.99)),
        }
    )


@st.composite
def accounts(draw):
    n = draw(st.integers(1, 12))
    equity = draw(st.lists(st.floats(-1e6, 1e8) | st.just(math.nan), min_size=n, max_size=n))
    risk = draw(st.lists(names | st.just("unknown"), min_size=n, max_size=n))
    vol = draw(st.lists(st.floats(0.0, 12.0) | st.just(math.nan), min_size=n, max_size=n))
    dd = draw(st.lists(st.floats(0.0, 1.5), min_size=n, max_size=n))
    overrides = draw(st.dictionaries(st.integers(0, n - 1), thresholds_st(), max_size=n))
    return equity, risk, vol, dd, overrides


def check_invariants(cfg, out, overridden=()):
    w, c, lq = out[:, 0], out[:, 1], out[:, 2]
    tol = 1e-9
    assert np.all(lq < c) and np.all(c < w)
    assert np.all(c - lq >= cfg.min_gap - tol) and np.all(w - c >= cfg.min_gap - tol)
    assert np.all(lq >= 1.0 + cfg.venue_margin)
    dynamic = np.ones(len(out), dtype=bool)
    dynamic[list(overridden)] = False
    assert np.all(w[dynamic] >= cfg.floors.warning)
    assert np.all(c[dynamic] >= cfg.floors.critical)
    assert np.all(lq[dynamic] >= cfg.floors.liquidation)


@settings(max_examples=100)
@given(cfg=configs(), base=thresholds_st(), accts=accounts())
def test_invariants_hold_for_any_configuration_and_inputs(cfg, base, accts):
    equity, risk, vol, dd, overrides = accts
    out = run(cfg=cfg, base=base, equity=equity, risk=risk, vol=vol, dd=dd, overrides=overrides)
    check_invariants(cfg, out, overridden=overrides.keys())
    # without overrides too, and explain() agrees with every account
    plain = run(cfg=cfg, base=base, equity=equity, risk=risk, vol=vol, dd=dd)
    check_invariants(cfg, plain)
    for k in range(len(equity)):
        res = explain(base, cfg, equity[k], risk[k], vol[k], dd[k], overrides.get(k))["result"]
        assert [res["warning"], res["critical"], res["liquidation"]] == out[k].tolist()


@settings(max_examples=60)
@given(
    cfg=configs(),
    base=thresholds_st(),
    equity=st.lists(st.floats(-1e6, 1e8), min_size=2, max_size=2),
    vol=st.lists(st.floats(0.0, 12.0), min_size=2, max_size=2),
    dd=st.lists(st.floats(0.0, 1.5), min_size=2, max_size=2),
    risk=names,
)
def test_more_equity_volatility_or_drawdown_never_lowers_a_threshold(cfg, base, equity, vol, dd, risk):
    lo_e, hi_e = sorted(equity)
    lo_v, hi_v = sorted(vol)
    lo_d, hi_d = sorted(dd)
    out = run(
        cfg=cfg,
        base=base,
        equity=(lo_e, hi_e, lo_e, lo_e),
        risk=(risk,) * 4,
        vol=(lo_v, lo_v, hi_v, lo_v),
        dd=(lo_d, lo_d, lo_d, hi_d),
    )
    assert np.all(out[1:] >= out[0])


# ---------------------------------------------------------------------------------------
# Overrides
# ---------------------------------------------------------------------------------------


def test_an_override_wins_over_the_dynamic_factors():
    # account 0 would be capped at +0.40 (2.8, 2.1, 1.68); its override is used as given,
    # even below the dynamic floors (warning 1.4 < floor 1.5). Account 1 stays dynamic.
    override = Thresholds(warning=1.4, critical=1.25, liquidation=1.1)
    out = run(
        equity=(2e6, 2e6),
        risk=("aggressive", "aggressive"),
        vol=(2.0, 2.0),
        dd=(0.3, 0.3),
        overrides={0: override},
    )
    assert out == approx_rows([1.4, 1.25, 1.1], [2.8, 2.1, 1.68])
    info = explain(BASE, CFG, 2e6, "aggressive", 2.0, 0.3, override)
    assert info["override"] == {"warning": 1.4, "critical": 1.25, "liquidation": 1.1}
    assert info["clamped"] == []
    assert info["superseded"]["result"] == pytest.approx({"warning": 2.8, "critical": 2.1, "liquidation": 1.68})


def test_an_override_below_the_venue_floor_is_clamped_and_the_clamp_reported():
    # override liquidation 1.0 -> 1.0 + venue_margin 0.05 = 1.05; critical 1.5 and warning 2.0 unchanged.
    override = Thresholds(warning=2.0, critical=1.5, liquidation=1.0)
    assert run(overrides={0: override}) == approx_rows([2.0, 1.5, 1.05])
    info = explain(BASE, CFG, 1e5, "standard", 0.5, 0.0, override)
    assert info["result"] == {"warning": 2.0, "critical": 1.5, "liquidation": 1.05}
    assert len(info["clamped"]) == 1
    assert "override liquidation" in info["clamped"][0] and "venue_margin" in info["clamped"][0]


def test_a_venue_clamp_that_squeezes_an_override_pushes_critical_and_warning_up():
    # override 1.12 / 1.06 / 1.01: liquidation -> 1.05; critical = max(1.06, 1.05 + 0.1) = 1.15;
    # warning = max(1.12, 1.15 + 0.1) = 1.25. Three clamps reported.
    override = Thresholds(warning=1.12, critical=1.06, liquidation=1.01)
    assert run(overrides={0: override}) == approx_rows([1.25, 1.15, 1.05])
    info = explain(BASE, CFG, 1e5, "standard", 0.5, 0.0, override)
    assert info["result"] == pytest.approx({"warning": 1.25, "critical": 1.15, "liquidation": 1.05})
    assert len(info["clamped"]) == 3 and all(r.startswith("override ") for r in info["clamped"])


def test_overrides_still_apply_and_are_clamped_with_the_section_disabled():
    off = cfg_with(enabled=False)
    override = Thresholds(warning=2.5, critical=1.8, liquidation=1.0)
    out = run(
        cfg=off, equity=(1e5, 1e5), risk=("standard",) * 2, vol=(0.5,) * 2, dd=(0.0,) * 2, overrides={1: override}
    )
    assert out == approx_rows([2.0, 1.5, 1.2], [2.5, 1.8, 1.05])


def test_an_override_for_an_account_that_does_not_exist_is_refused():
    with pytest.raises(ValueError, match="overrides: account index 3"):
        run(overrides={3: BASE})


# ---------------------------------------------------------------------------------------
# explain()
# ---------------------------------------------------------------------------------------


def test_explain_lists_each_factor_with_its_delta_and_matches_effective_thresholds():
    # 2M (+0.10), aggressive (+0.10), elevated 1.0 (+0.05), drawdown 0.12 (+0.05): total 0.30
    # -> 2.6, 1.95, 1.56. Size moves warning by 2.0 * 0.10 = 0.2, liquidation by 1.2 * 0.10 = 0.12.
    info = explain(BASE, CFG, 2e6, "aggressive", 1.0, 0.12)
    assert [f["name"] for f in info["factors"]] == ["size", "risk_class", "volatility", "drawdown"]
    size, risk, vol, dd = info["factors"]
    assert size["input"] == 2e6 and size["adjust"] == 0.10 and size["band"]["min_equity"] == 1_000_000
    assert size["warning"] == pytest.approx(0.2) and size["liquidation"] == pytest.approx(0.12)
    assert risk["input"] == "aggressive" and risk["adjust"] == 0.10 and risk["known"] is True
    assert vol["regime"] == "elevated" and vol["critical"] == pytest.approx(1.5 * 0.05)
    assert dd["band"]["min_drawdown"] == 0.10 and dd["adjust"] == 0.05
    assert info["total_adjust"] == pytest.approx(0.30) and info["applied_adjust"] == pytest.approx(0.30)
    assert info["clamped"] == [] and info["override"] is None
    assert info["result"] == pytest.approx({"warning": 2.6, "critical": 1.95, "liquidation": 1.56})
    vec = run(equity=(2e6,), risk=("aggressive",), vol=(1.0,), dd=(0.12,))[0]
    assert [info["result"][k] for k in ("warning", "critical", "liquidation")] == vec.tolist()
    # base + the deltas of every factor = the adjusted thresholds (no cap here)
    for t in ("warning", "critical", "liquidation"):
        assert info["base"][t] + sum(f[t] for f in info["factors"]) == pytest.approx(info["adjusted"][t])


def test_explain_reports_the_cap():
    info = explain(BASE, CFG, 2e6, "aggressive", 2.0, 0.3)  # total 0.55, capped at 0.40
    assert info["total_adjust"] == pytest.approx(0.55) and info["applied_adjust"] == pytest.approx(0.40)
    assert any("max_adjust" in r for r in info["clamped"])
    assert info["result"] == pytest.approx({"warning": 2.8, "critical": 2.1, "liquidation": 1.68})


def test_explain_with_the_section_disabled_shows_no_factor_and_the_base():
    info = explain(BASE, cfg_with(enabled=False), 2e6, "aggressive", 2.0, 0.3)
    assert info["enabled"] is False and info["factors"] == [] and info["clamped"] == []
    assert info["result"] == {"warning": 2.0, "critical": 1.5, "liquidation": 1.2}


# ---------------------------------------------------------------------------------------
# Inputs: realised volatility, account volatility, drawdown
# ---------------------------------------------------------------------------------------


def test_realised_volatility_is_annualised_from_log_returns():
    # column 0: 100 -> 110 -> 100, returns +ln 1.1 and -ln 1.1, rms = ln 1.1 = 0.0953102;
    # daily steps: * sqrt(365) = 19.104973 -> 1.820880. Column 1 is flat: 0.
    # Column 2 has a missing mark: only the valid return 100 -> 110 counts: same 1.820880.
    # Column 3 has no valid return at all: NaN.
    prices = np.array(
        [
            [100.0, 50.0, 100.0, np.nan],
            [110.0, 50.0, 110.0, 1.0],
            [100.0, 50.0, np.nan, np.nan],
        ]
    )
    vol = realised_volatility(prices, 86400.0)
    expected = math.log(1.1) * math.sqrt(365.0)
    assert vol[:3] == pytest.approx([expected, 0.0, expected], rel=1e-12)
    assert math.isnan(vol[3])
    # the same path sampled every hour is sqrt(24) times more volatile per year
    assert realised_volatility(prices[:, :1], 3600.0)[0] == pytest.approx(expected * math.sqrt(24.0))


def test_realised_volatility_refuses_a_bad_shape_or_step():
    with pytest.raises(ValueError, match="T x N"):
        realised_volatility(np.array([1.0, 2.0]), 1.0)
    with pytest.raises(ValueError, match="dt_seconds"):
        realised_volatility(np.ones((3, 2)), 0.0)


def test_account_volatility_is_the_notional_weighted_volatility_of_the_instruments_held():
    # account 0: 300 of inst 0 (vol 0.5) and a short 100 of inst 1 (vol 1.0):
    #            (300 * 0.5 + 100 * 1.0) / 400 = 0.625
    # account 1: 50 of inst 1 only -> 1.0, plus 70 of inst 2 whose vol is unknown (left out)
    # account 2: no position -> 0
    vol = account_volatility(
        pos_account=np.array([0, 0, 1, 1]),
        pos_instrument=np.array([0, 1, 1, 2]),
        notional=np.array([300.0, -100.0, 50.0, 70.0]),
        inst_vol=np.array([0.5, 1.0, np.nan]),
        n_accounts=3,
    )
    assert vol == pytest.approx([0.625, 1.0, 0.0])


def test_drawdown_is_the_fall_from_the_equity_peak():
    # 90 / 100 -> 0.1; above the peak -> 0; no positive peak -> 0; negative equity -> 1.5
    dd = drawdown(np.array([90.0, 120.0, 50.0, 10.0, -50.0]), np.array([100.0, 100.0, 0.0, -5.0, 100.0]))
    assert dd == pytest.approx([0.1, 0.0, 0.0, 0.0, 1.5])


# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"size_bands": [{"min_equity": 1e6, "adjust": 0.1}, {"min_equity": 0, "adjust": 0.2}]}, "size_bands"),
        ({"size_bands": [{"min_equity": 0, "adjust": 0.2}, {"min_equity": 1e6, "adjust": 0.1}]}, "size_bands"),
        ({"size_bands": [{"min_equity": 0, "adjust": -0.1}]}, "adjust"),
        (
            {"drawdown_bands": [{"min_drawdown": 0.3, "adjust": 0.1}, {"min_drawdown": 0.1, "adjust": 0.2}]},
            "drawdown_bands",
        ),
        ({"drawdown_bands": [{"min_drawdown": 1.2, "adjust": 0.1}]}, "min_drawdown"),
        ({"risk_classes": {"aggressive": 2.0}}, "risk_classes"),
        ({"volatility": {"elevated_above": 1.5, "stressed_above": 0.8}}, "stressed_above"),
        ({"volatility": {"elevated": 0.2, "stressed": 0.1}}, "volatility.stressed"),
        ({"floors": {"warning": 1.1, "critical": 1.2, "liquidation": 1.05}}, "floors"),
        ({"venue_margin": -0.01}, "venue_margin"),
        ({"min_gap": 0.0}, "min_gap"),
        ({"max_adjust": 1.0}, "max_adjust"),
        ({"max_ajdust": 0.3}, "max_ajdust"),
    ],
)
def test_an_invalid_configuration_is_refused_naming_the_field(change, field):
    with pytest.raises(ValidationError, match=field.replace(".", r"\.")):
        cfg_with(**change)


def test_the_defaults_are_valid_neutral_and_switched_off():
    cfg = DynamicThresholdsConfig()
    assert cfg.enabled is False
    assert run(cfg=cfg, equity=(5e6,), risk=("aggressive",), vol=(3.0,), dd=(0.5,)) == approx_rows([2.0, 1.5, 1.2])


def shipped_section() -> tuple[dict, DynamicThresholdsConfig]:
    data = tomllib.loads(CONFIG_TOML.read_text(encoding="utf-8"))
    return data, DynamicThresholdsConfig.model_validate(data["dynamic_thresholds"])


def test_the_shipped_section_validates_and_every_factor_moves_demo_accounts():
    data, cfg = shipped_section()
    assert cfg.enabled
    base = Thresholds.model_validate(data.get("thresholds", {}))

    def w(equity=100_000.0, risk="standard", vol=0.55, dd=0.0):
        return run(cfg=cfg, base=base, equity=(equity,), risk=(risk,), vol=(vol,), dd=(dd,))[0]

    # size: a 4M account vs a 60k one (demo wallets span ~20k-5M)
    assert np.all(w(equity=4_000_000.0) > w(equity=60_000.0))
    # risk class: aggressive > standard > conservative
    assert np.all(w(risk="aggressive") > w(risk="standard"))
    assert np.all(w(risk="standard") > w(risk="conservative"))
    # volatility: a BTC-like book (0.55) calm, an alt book (0.95) elevated, 3x BTC stressed
    assert np.all(w(vol=1.65) > w(vol=0.95)) and np.all(w(vol=0.95) > w(vol=0.55))
    # drawdown: 20% below the peak vs at the peak
    assert np.all(w(dd=0.20) > w(dd=0.0))


def test_the_shipped_section_knows_the_demo_risk_classes_and_sizes_spread_over_bands():
    data, cfg = shipped_section()
    demo = data.get("simulator", {}).get("accounts", [])
    classes = {a.get("risk_class", "standard") for a in demo} | {"conservative", "standard", "aggressive"}
    assert unknown_risk_classes(cfg, np.array(sorted(classes), dtype=object)) == []
    wallets = [a["wallet_balance"] for a in demo] or [20_000.0, 5_000_000.0]
    edges = np.array([b.min_equity for b in cfg.size_bands])
    assert len(set(np.searchsorted(edges, wallets, side="right").tolist())) >= 2


def test_every_key_of_the_shipped_section_carries_a_comment():
    lines = CONFIG_TOML.read_text(encoding="utf-8").splitlines()
    start = lines.index("[dynamic_thresholds]")
    checked = 0
    for line in lines[start + 1 :]:
        if line.startswith("[") and not line.startswith("[dynamic_thresholds."):
            break  # the next section
        if "=" in line and not line.lstrip().startswith("#"):
            assert "#" in line, line
            checked += 1
    assert checked >= 20
