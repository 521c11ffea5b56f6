"""[risk] margin methods and maintenance add-ons, as the guard applies them.

Hand-computed on one BTCUSDT position at the demo's starting mark 64,000 (bundled config):
9.375 contracts = 600,000 notional, tier 3 (250k-3M: mmr 1%, maintenance amount 1,300), so
the venue MM is 600,000 * 0.01 - 1,300 = 4,700 and the venue IM 600,000 / 50 = 12,000. The
wallet is 10,000 at entry = mark: equity 10,000, venue ratio 10,000 / 4,700 = 2.128 (SAFE at
the seed thresholds 2.0 / 1.5 / 1.2; dynamic thresholds are switched off here).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.analytics.maintenance import VolatilityAdjustment
from engine.analytics.margin_methods import MarginMethods
from engine.api import ApiServer
from engine.config import ConfigError, MaintenanceAddonsConfig, RiskConfig, bundled_config_path, parse_config
from engine.levels import Level
from engine.model import Account, Position
from tests.engine.api.support import api_config, client
from tests.engine.guard.support import config, make_guard
from tests.engine.test_book import assert_books_agree, books, fresh_book, recomputed

MARK = 64_000.0
QTY = 9.375  # 600,000 notional at 64,000
NOTIONAL = 600_000.0
VENUE_MM = NOTIONAL * 0.01 - 1_300.0  # 4,700
DEPTH = 60_000_000.0  # BTCUSDT book_depth
BTC_VOL = 0.55  # simulator.markets.BTCUSDT.volatility (annual)


def one_btc(wallet: float = 10_000.0, margin_mode: str = "cross", extra: list[Position] | None = None) -> Account:
    iso = {"isolated_margin": 10_000.0} if margin_mode == "isolated" else {}
    positions = [Position(symbol="BTCUSDT", qty=QTY, entry_price=MARK, **iso), *(extra or [])]
    return Account(id="one", wallet_balance=wallet, margin_mode=margin_mode, positions=positions)


def guard_with(tmp_path, risk: RiskConfig | None = None, accounts: list[Account] | None = None, name: str = "g"):
    sections = {"dynamic_thresholds": {"enabled": False}}
    cfg = config(**sections)
    if risk is not None:
        cfg = cfg.model_copy(update={"risk": risk})
    path = tmp_path / name
    path.mkdir()
    g = make_guard(path, "calm", cfg=cfg, accounts=accounts)
    if accounts is not None:
        assert g.book.mark[g.book.symbol_index["BTCUSDT"]] == MARK
    return g


def figures(g) -> dict[str, np.ndarray]:
    b = g.book
    snap = g.snapshot()
    return {
        "equity": b.equity.copy(),
        "mm": b.acct_mm.copy(),
        "ratio": b.ratio.copy(),
        "level": b.level.copy(),
        "im": b.acct_im.copy(),
        "utilization": snap.columns["utilization"],
        "warning": b.warning.copy(),
    }


# ---------------------------------------------------------------------------- defaults
def test_the_default_risk_section_changes_no_figure(tmp_path):
    plain = guard_with(tmp_path, name="plain")  # the bundled config has no [risk] section
    explicit = RiskConfig(margin=MarginMethods(default="position", groups={"majors": "position"}))
    spelled = guard_with(tmp_path, explicit, name="spelled")
    assert plain.config.risk == RiskConfig()
    for g in (plain, spelled):
        assert g.im_methods is None and not g.book._mm_addon_on
        assert g.mm_addons == {"volatility": None, "impact": None}
        assert not g.book.acct_mm_addon.any()
    for t in (0.5, 1.0, 1.75, 2.5):  # ticks and 1 Hz refreshes on both
        for g in (plain, spelled):
            g.clock.advance(t)
            g.evaluate(g.clock.now())
        a, b = figures(plain), figures(spelled)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # exactly the venue ratio: equity / MM, no add-on anywhere
    b = plain.book
    cross = ~b.isolated
    with np.errstate(divide="ignore", invalid="ignore"):
        venue = np.where(b.acct_mm > 0, b.equity / b.acct_mm, np.inf)
    np.testing.assert_array_equal(b.ratio[cross], venue[cross])
    detail = plain.account_detail(b.info[0].id)
    assert (
        detail["margin"]["maintenance"]["used"]
        == detail["margin"]["maintenance"]["venue"]
        == detail["maintenance_margin"]
    )
    assert detail["margin"]["maintenance"]["volatility_addon"] is None
    assert detail["margin"]["maintenance"]["impact_addon"] is None
    assert {p["method"] for p in detail["margin"]["initial"]["positions"]} <= {"position"}
    assert detail["margin"]["initial"]["used"] == detail["initial_margin"] == detail["margin"]["initial"]["venue"]


# ---------------------------------------------------------------------------- maintenance add-ons
def test_impact_addon_enters_the_ratio_and_the_level_follows(tmp_path):
    g = guard_with(tmp_path, RiskConfig(maintenance=MaintenanceAddonsConfig(impact=True)), [one_btc()])
    b = g.book
    impact = 0.01 * 1.0 * math.sqrt(NOTIONAL / DEPTH) * NOTIONAL  # 0.01 * 0.1 * 600,000 = 600
    assert impact == pytest.approx(600.0)
    assert b.acct_mm[0] == pytest.approx(VENUE_MM)  # the venue's MM is unchanged
    assert b.acct_mm_addon[0] == pytest.approx(impact)
    assert b.ratio[0] == pytest.approx(10_000.0 / (VENUE_MM + impact))  # 1.887, was 2.128
    assert b.level[0] == Level.WARNING and g.ladder.level[0] == Level.WARNING
    m = g.account_detail("one")["margin"]["maintenance"]
    assert m == {
        "venue": pytest.approx(VENUE_MM),
        "volatility_addon": None,
        "impact_addon": pytest.approx(impact),
        "addons_applied": True,
        "used": pytest.approx(5_300.0),
    }
    assert g.snapshot().columns["margin_ratio"][0] == pytest.approx(10_000.0 / 5_300.0)

    # A tick re-values the venue MM at once; the add-on is the last refresh's until the next one.
    btc = b.symbol_index["BTCUSDT"]
    g.ingest(np.array([btc]), np.array([66_000.0]), g.clock.now())
    notional2 = QTY * 66_000.0
    mm2 = notional2 * 0.01 - 1_300.0
    equity2 = 10_000.0 + QTY * 2_000.0
    assert b.ratio[0] == pytest.approx(equity2 / (mm2 + impact))
    g.refresh_thresholds(g.clock.now())
    impact2 = 0.01 * math.sqrt(notional2 / DEPTH) * notional2
    assert b.ratio[0] == pytest.approx(equity2 / (mm2 + impact2))

    # Switched off by a reload: the venue ratio again, exactly.
    g.reload(g.config.model_copy(update={"risk": RiskConfig()}))
    assert not b._mm_addon_on and b.acct_mm_addon[0] == 0.0
    assert b.ratio[0] == equity2 / b.acct_mm[0]


@pytest.mark.parametrize(
    ("elevated_above", "stressed_above", "multiplier"),
    [(0.3, 0.5, 1.5), (0.5, 1.0, 1.25), (0.6, 1.0, 1.0)],  # BTCUSDT at 55%: stressed, elevated, calm
)
def test_volatility_adjustment_multiplies_mm_by_the_regime(tmp_path, elevated_above, stressed_above, multiplier):
    adj = VolatilityAdjustment(
        elevated_above=elevated_above, stressed_above=stressed_above, elevated_multiplier=1.25, stressed_multiplier=1.5
    )
    g = guard_with(tmp_path, RiskConfig(maintenance=MaintenanceAddonsConfig(volatility=adj)), [one_btc()])
    b = g.book
    assert b.acct_mm_addon[0] == pytest.approx(VENUE_MM * (multiplier - 1))
    assert b.ratio[0] == pytest.approx(10_000.0 / (VENUE_MM * multiplier))
    m = g.account_detail("one")["margin"]["maintenance"]
    assert m["volatility_addon"] == pytest.approx(VENUE_MM * (multiplier - 1)) and m["impact_addon"] is None
    assert m["used"] == pytest.approx(VENUE_MM * multiplier)
    # stressed: 10,000 / 7,050 = 1.418 is CRITICAL; elevated: 10,000 / 5,875 = 1.702 WARNING; calm SAFE
    want = {1.5: Level.CRITICAL, 1.25: Level.WARNING, 1.0: Level.SAFE}[multiplier]
    assert b.level[0] == want and g.ladder.level[0] == want


def test_both_addons_are_reported_apart_and_summed(tmp_path):
    adj = VolatilityAdjustment(elevated_above=0.3, stressed_above=0.5)
    risk = RiskConfig(maintenance=MaintenanceAddonsConfig(volatility=adj, impact=True))
    g = guard_with(tmp_path, risk, [one_btc()])
    m = g.account_detail("one")["margin"]["maintenance"]
    assert m["volatility_addon"] == pytest.approx(2_350.0) and m["impact_addon"] == pytest.approx(600.0)
    assert m["used"] == pytest.approx(4_700.0 + 2_350.0 + 600.0)
    assert g.book.ratio[0] == pytest.approx(10_000.0 / 7_650.0)


def test_isolated_accounts_get_no_addon(tmp_path):
    g = guard_with(tmp_path, RiskConfig(maintenance=MaintenanceAddonsConfig(impact=True)), [one_btc(0.0, "isolated")])
    b = g.book
    assert b.acct_mm_addon[0] == 0.0
    assert b.ratio[0] == pytest.approx(10_000.0 / VENUE_MM)  # isolated margin / position MM
    m = g.account_detail("one")["margin"]["maintenance"]
    assert m["impact_addon"] == pytest.approx(600.0) and m["addons_applied"] is False
    assert m["used"] == pytest.approx(VENUE_MM)


# ---------------------------------------------------------------------------- initial margin by method
def test_a_risk_based_group_sets_im_in_the_detail_snapshot_and_margin_endpoint(tmp_path):
    methods = MarginMethods(groups={"majors": "risk"}, risk_multiplier=3.0, horizon_days=4.0)
    sol = Position(symbol="SOLUSDT", qty=100.0, entry_price=150.0)  # l1: position method (brackets)
    g = guard_with(tmp_path, RiskConfig(margin=methods), [one_btc(extra=[sol])])
    sigma = BTC_VOL / math.sqrt(365.0)  # daily
    risk_im = NOTIONAL * 3.0 * sigma * math.sqrt(4.0)  # notional * k * sigma * sqrt(h) = 103,637.9
    assert risk_im == pytest.approx(103_637.9, abs=0.1)
    sol_im = float(g.book.initial_margin[1])
    assert sol_im == pytest.approx(15_000.0 / g.config.instruments[2].brackets[0].max_leverage)
    d = g.account_detail("one")
    im = d["margin"]["initial"]
    assert im["positions"] == [{"symbol": "BTCUSDT", "method": "risk"}, {"symbol": "SOLUSDT", "method": "position"}]
    assert im["by_method"] == {"risk": pytest.approx(risk_im), "position": pytest.approx(sol_im)}
    assert im["used"] == pytest.approx(risk_im + sol_im) == d["initial_margin"]
    assert im["venue"] == pytest.approx(12_000.0 + sol_im)
    equity = d["equity"]
    assert d["utilization"] == pytest.approx((risk_im + sol_im) / equity)
    assert d["free_margin"] == pytest.approx(equity - risk_im - sol_im)
    assert g.snapshot().columns["utilization"][0] == pytest.approx((risk_im + sol_im) / equity)
    # maintenance untouched by IM methods
    assert g.book.ratio[0] == g.book.equity[0] / g.book.acct_mm[0]


async def test_the_margin_endpoint_uses_the_configured_methods(tmp_path):
    methods = MarginMethods(groups={"majors": "risk"}, risk_multiplier=3.0, horizon_days=4.0)
    g = guard_with(tmp_path, RiskConfig(margin=methods), [one_btc()])
    server = ApiServer(g, api_config())
    await server.start()
    try:
        async with client(server, "viewer") as c:
            body = (await c.get("/margin/one")).json()
    finally:
        await server.stop()
        g.journal.close()
    risk_im = NOTIONAL * 3.0 * BTC_VOL / math.sqrt(365.0) * 2.0
    assert body["initial_margin"] == pytest.approx(risk_im)
    assert body["venue_initial_margin"] == pytest.approx(12_000.0)
    assert body["free_margin"] == pytest.approx(10_000.0 - risk_im)
    assert body["available_margin"] == 0.0
    assert body["utilization"] == pytest.approx(risk_im / 10_000.0)
    assert body["positions"][0]["margin_method"] == "risk"


# ---------------------------------------------------------------------------- config errors
@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[risk.margin]\ndefault = "span"\n', r"risk\.margin\.default"),
        ('[risk.margin.groups]\nmajors = "risky"\n', r"risk\.margin\.groups\.majors"),
        ("[risk.margin]\nrisk_multiplier = 0\n", r"risk\.margin\.risk_multiplier"),
        (
            "[risk.maintenance.volatility]\nstressed_multiplier = 0.5\n",
            r"risk\.maintenance\.volatility\.stressed_multiplier",
        ),
        ("[risk.maintenance]\nimpact = 2\n", r"risk\.maintenance\.impact"),
        ("[risk.maintenance]\nliquidity = true\n", r"risk\.maintenance\.liquidity: unknown key"),
    ],
)
def test_invalid_risk_config_is_refused_naming_the_key(text, key):
    with pytest.raises(ConfigError, match=key):
        parse_config(text)


def test_a_valid_risk_section_parses_to_what_the_guard_reads():
    cfg, _ = parse_config(
        '[risk.margin]\ndefault = "position"\ngroups = { majors = "risk" }\naccounts = { "acct-01" = "portfolio" }\n'
        "[risk.maintenance]\nimpact = true\n[risk.maintenance.volatility]\nstressed_multiplier = 2.0\n"
    )
    assert cfg.risk.margin.groups == {"majors": "risk"} and cfg.risk.margin.accounts == {"acct-01": "portfolio"}
    assert cfg.risk.maintenance.impact and cfg.risk.maintenance.volatility.stressed_multiplier == 2.0


def test_the_commented_risk_example_of_config_toml_runs_the_demo(tmp_path):
    text = bundled_config_path().read_text(encoding="utf-8")
    assert "\n[risk]" not in text  # shipped commented out: the default changes nothing
    cfg, _ = parse_config("\n".join(line.removeprefix("#~ ") for line in text.splitlines()), "uncommented")
    r = cfg.risk
    assert [s.name for s in r.scenarios] == ["alt winter"] and r.maintenance.impact
    assert r.maintenance.volatility is not None and r.margin.accounts == {"d1-core-01": "scenario"}
    g = make_guard(tmp_path, "calm", cfg=cfg)
    for _ in range(3):
        g.clock.advance(1.0)
        g.evaluate(g.clock.now())
    b = g.book
    cross = ~b.isolated & (b.acct_pos_count > 0)
    assert (b.acct_mm_addon[cross] > 0).all() and (b.ratio[cross] < b.equity[cross] / b.acct_mm[cross]).all()
    d = g.account_detail("d1-core-01")["margin"]
    assert {p["method"] for p in d["initial"]["positions"]} == {"scenario"}
    assert d["initial"]["used"] == pytest.approx(d["initial"]["by_method"]["scenario"]) and d["initial"]["used"] > 0
    assert np.isfinite(g.snapshot().columns["utilization"][cross]).all()


# ---------------------------------------------------------------------------- the book's invariant
@settings(max_examples=60)
@given(books(), st.data())
def test_incremental_ticks_equal_a_full_recompute_with_an_addon(spec, data):
    insts, accounts, prices = spec
    book = fresh_book(insts, accounts, prices)
    amount = st.one_of(st.just(0.0), st.floats(1.0, 1e6))
    addon = np.array(data.draw(st.lists(amount, min_size=book.n_accounts, max_size=book.n_accounts)))
    book.set_mm_addon(addon)
    n_inst = len(insts)
    ops = data.draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("tick"), st.integers(0, n_inst - 1), st.floats(0.3, 3.0)),
                st.tuples(st.just("marks+revalue"), st.integers(0, n_inst - 1), st.floats(0.5, 2.0)),
                st.tuples(st.just("fill"), st.integers(0, 50), st.floats(0.1, 1.0)),
            ),
            max_size=20,
        )
    )
    for op, k, x in ops:
        if op == "tick":
            book.apply_tick(k, float(book.mark[k]) * x, 1.0)
        elif op == "marks+revalue":
            book.set_marks(np.array([k]), book.mark[[k]] * x, 1.0)
            book.revalue()
        elif book.pos_qty.size and book.pos_qty[k % book.pos_qty.size] != 0:
            p = k % book.pos_qty.size
            book.apply_fill(p, -book.pos_qty[p] * x, float(book.mark[book.pos_instrument[p]]))
        ref = recomputed(book, insts)
        ref.set_mm_addon(addon)
        assert_books_agree(book, ref, lazy=False)
    # Cross accounts: ratio = equity / (venue MM + add-on); the venue MM is that of a book
    # without add-on; isolated accounts get none.
    plain = recomputed(book, insts)
    cross = ~book.isolated & np.isfinite(book.ratio) & (book.acct_mm + addon > 0)
    want = book.equity[cross] / (plain.acct_mm[cross] + addon[cross])
    np.testing.assert_allclose(book.ratio[cross], want, rtol=1e-9, atol=1e-12)
    assert (book.acct_mm_addon[book.isolated] == 0).all()


def test_a_bad_addon_is_refused_whole():
    from engine.model import InputError

    g_book = fresh_book(*_tiny())
    with pytest.raises(InputError, match="one value per account"):
        g_book.set_mm_addon(np.zeros(3))
    with pytest.raises(InputError, match="not negative"):
        g_book.set_mm_addon(np.array([-1.0]))
    assert not g_book._mm_addon_on and g_book.acct_mm_addon[0] == 0.0


def _tiny():
    from engine.model import Instrument

    inst = Instrument(symbol="X", brackets=[{"floor": 0.0, "mmr": 0.01, "max_leverage": 50.0}])
    acct = Account(id="a", wallet_balance=1_000.0, positions=[Position(symbol="X", qty=1.0, entry_price=100.0)])
    return [inst], [acct], {"X": 100.0}


def test_a_deleverage_plan_aims_at_the_guards_ratio_with_its_addons(tmp_path):
    """Stressed regime, MM x 1.5: 10,000 / 7,050 = 1.418. A plan to 2.0 must reach 2.0 on the
    guard's ratio (venue MM after x 1.5), not on the venue's (which would stop at 1.333 for the guard)."""
    from engine.actions.deleverage import plan_deleverage

    adj = VolatilityAdjustment(
        elevated_above=0.3, stressed_above=0.5, elevated_multiplier=1.25, stressed_multiplier=1.5
    )
    g = guard_with(tmp_path, RiskConfig(maintenance=MaintenanceAddonsConfig(volatility=adj)), [one_btc()])
    plan = plan_deleverage(g.book, 0, target_ratio=2.0, strategy="proportional", method="market")
    assert plan.maintenance_margin == pytest.approx(VENUE_MM * 1.5) and plan.ratio == pytest.approx(10_000 / 7_050)
    left = (QTY - sum(o.qty for o in plan.orders)) * MARK  # notional left

    def btc_mm(n: float) -> float:  # BTCUSDT's brackets in config.toml, by hand
        return n * 0.005 - 50 if n < 250_000 else n * 0.01 - 1_300

    assert plan.projected_maintenance_margin == pytest.approx(1.5 * btc_mm(left))
    assert plan.projected_ratio >= 2.0 * (1 - 1e-6)
    assert plan.projected_equity / (1.5 * btc_mm(left)) == pytest.approx(plan.projected_ratio)
