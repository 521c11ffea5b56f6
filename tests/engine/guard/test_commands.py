"""Operator commands: the same path as automatic actions, with roles checked and journaled."""

import numpy as np

from engine.ladder import REDUCE_BREAKER, REDUCE_KILL, TradingState
from engine.levels import Level
from tests.engine.guard.support import RISK, TRADER, VIEWER, config, drive, make_guard, settle


def biggest(g):
    a = int(np.argmax(g.book.acct_notional))
    return a, g.book.info[a].id


async def test_a_trader_cannot_liquidate_and_the_refusal_is_journaled(tmp_path):
    g = make_guard(tmp_path, "calm")
    _, acct = biggest(g)
    r = await g.command("liquidate", TRADER, account=acct, confirm=acct)
    assert not r.ok
    assert r.message == "liquidate needs the risk role; tom is trader"
    refused = g.journal.records(kind="operator", account=acct)[-1]
    assert refused["refused"] == r.message and refused["operator"] == "tom"
    assert g.broker.orders() == []


async def test_liquidation_needs_the_account_id_typed_back(tmp_path):
    g = make_guard(tmp_path, "calm")
    _, acct = biggest(g)
    r = await g.command("liquidate", RISK, account=acct, confirm="yes")
    assert not r.ok and "confirm equal to the account id" in r.message
    assert g.broker.orders() == []


async def test_a_confirmed_manual_liquidation_closes_the_account_and_halts_it(tmp_path):
    g = make_guard(tmp_path, "calm")
    a, acct = biggest(g)
    await drive(g, 1)
    r = await g.command("liquidate", RISK, account=acct, confirm=acct, mode="immediate")
    assert r.ok and r.action_id
    await settle(g)
    assert np.all(g.book.pos_qty[g.book.account_positions(a)] == 0)
    assert g.ladder.trading_state[a] == TradingState.HALTED
    ops = g.journal.records(kind="operator", account=acct)
    assert ops[0]["command"] == "liquidate" and ops[0]["operator"] == "rita" and ops[0]["role"] == "risk"
    decision = g.journal.records(kind="decision", account=acct)[0]
    assert decision["action_id"] == r.action_id and decision["operator"] == "rita"
    intents = g.journal.records(kind="order_intent", account=acct)
    assert intents and all(i["reduce_only"] for i in intents)
    assert all(i["client_order_id"].startswith(r.action_id + "-") for i in intents)
    # Reset needs a reason, then trading is re-enabled.
    assert not (await g.command("reset", RISK, account=acct)).ok
    assert (await g.command("reset", RISK, account=acct, reason="post-mortem done")).ok
    assert g.ladder.trading_state[a] == TradingState.ACTIVE


async def test_a_dry_run_deleverage_sends_nothing_and_shows_the_projected_ratio(tmp_path):
    g = make_guard(tmp_path, "calm")
    a, acct = biggest(g)
    target = float(g.book.ratio[a]) * 1.5
    r = await g.command("deleverage", VIEWER, account=acct, target_ratio=target, dry_run=True)
    assert r.ok and r.plan["orders"]
    assert r.plan["projected_ratio"] >= target
    assert g.broker.orders() == []


async def test_confirming_a_plan_that_moved_shows_it_again_instead_of_sending(tmp_path):
    g = make_guard(tmp_path, "calm")
    a, acct = biggest(g)
    target = float(g.book.ratio[a]) * 1.5
    shown = (await g.command("deleverage", TRADER, account=acct, target_ratio=target, dry_run=True)).plan
    stale = [dict(o, qty=o["qty"] * 2) for o in shown["orders"]]
    r = await g.command("deleverage", TRADER, account=acct, target_ratio=target, confirm_plan=stale)
    assert not r.ok and "moved" in r.message and r.plan is not None
    assert g.broker.orders() == []
    r = await g.command("deleverage", TRADER, account=acct, target_ratio=target, confirm_plan=shown["orders"])
    assert r.ok
    await settle(g)
    assert g.book.ratio[a] >= target * 0.99


async def test_a_trader_may_tighten_thresholds_but_not_loosen_them(tmp_path):
    g = make_guard(tmp_path, "calm")
    a, acct = biggest(g)
    w, c, liq = (float(x[a]) for x in (g.book.warning, g.book.critical, g.book.liquidation))
    r = await g.command("set_thresholds", TRADER, account=acct, warning=w + 0.5, critical=c + 0.2, liquidation=liq)
    assert r.ok, r.message
    assert g.book.warning[a] == w + 0.5
    r = await g.command("set_thresholds", TRADER, account=acct, warning=w, critical=c, liquidation=liq - 0.05)
    assert not r.ok and "risk role" in r.message
    r = await g.command("set_thresholds", RISK, account=acct, warning=1.4, critical=1.5, liquidation=1.2)
    assert not r.ok and "liquidation < critical < warning" in r.message
    r = await g.command("set_thresholds", RISK, account=acct, warning=1.5, critical=1.2, liquidation=1.01)
    assert not r.ok and "venue floor" in r.message
    assert [t["after"]["warning"] for t in g.journal.records(kind="threshold")] == [w + 0.5]


async def test_a_hold_freezes_automatic_deleveraging_until_it_expires(tmp_path):
    cfg = config()
    g = make_guard(tmp_path, "demo", cfg=cfg)
    for info in g.book.info:
        r = await g.command("hold", RISK, account=info.id, duration=30, reason="desk is hedging by hand")
        assert r.ok
    await drive(g, 29)
    assert g.journal.records(kind="action_start") == []
    assert (g.ladder.level >= Level.CRITICAL).any()
    await drive(g, 10)
    assert g.journal.records(kind="action_start"), "protection resumes by itself when the hold expires"


async def test_the_kill_switch_puts_every_account_in_reducing_and_cancels_working_orders(tmp_path):
    g = make_guard(tmp_path, "calm")
    await drive(g, 1)
    increasing = [a for a in range(g.book.n_accounts) if g.book.exposure_increasing_orders(a).any()]
    assert increasing, "the demo book has working orders that increase exposure"
    assert not (await g.command("kill_switch", TRADER, engage=True, reason="x")).ok
    r = await g.command("kill_switch", RISK, engage=True, reason="venue outage")
    assert r.ok
    await drive(g, 1)
    assert np.all(g.ladder.trading_state == TradingState.REDUCING)
    assert np.all(g.ladder.reduce_flags & REDUCE_KILL)
    assert not any(g.book.exposure_increasing_orders(a).any() for a in increasing)
    assert (await g.command("kill_switch", RISK, engage=False, reason="venue back")).ok
    assert not np.any(g.ladder.reduce_flags & REDUCE_KILL)


async def test_many_accounts_breaching_at_once_trip_the_circuit_breaker(tmp_path):
    g = make_guard(tmp_path, "crash", cfg=config(circuit_breaker={"count": 3, "window": 30.0}))
    await drive(g, 12)
    assert g.protection.breaker_tripped
    assert np.all(g.ladder.reduce_flags & REDUCE_BREAKER)
    assert any(r.get("event") == "circuit_breaker" for r in g.journal.records(kind="system"))
    assert not (await g.command("release_breaker", RISK)).ok  # a reason is required
    assert (await g.command("release_breaker", RISK, reason="reviewed")).ok
    assert not np.any(g.ladder.reduce_flags & REDUCE_BREAKER)


async def test_a_scheduled_deleverage_runs_at_its_time_and_a_cancelled_one_never(tmp_path):
    g = make_guard(tmp_path, "calm")
    a, acct = biggest(g)
    target = float(g.book.ratio[a]) * 1.3
    r1 = await g.command(
        "schedule", TRADER, account=acct, action="deleverage", in_seconds=5, params={"target_ratio": target}
    )
    r2 = await g.command("schedule", TRADER, account=acct, action="deleverage", in_seconds=5, params={"fraction": 0.5})
    assert r1.ok and r2.ok
    assert (await g.command("cancel_schedule", TRADER, schedule_id=r2.action_id)).ok
    assert not (await g.command("schedule", TRADER, account=acct, action="liquidate", in_seconds=5)).ok
    await drive(g, 6)
    await settle(g)
    starts = g.journal.records(kind="action_start", account=acct)
    assert len(starts) == 1 and starts[0]["plan"]["target"] == target


async def test_an_unknown_account_or_command_is_refused_by_name(tmp_path):
    g = make_guard(tmp_path, "calm")
    r = await g.command("hold", RISK, account="nope", duration=5, reason="x")
    assert not r.ok and "no account 'nope'" in r.message
    r = await g.command("explode", RISK)
    assert not r.ok and "unknown command 'explode'" in r.message


async def test_a_threshold_edit_is_written_back_with_the_comments_kept(tmp_path):
    from engine.config import ConfigWriter, bundled_config_path, load_config

    copy = tmp_path / "config.toml"
    copy.write_text(bundled_config_path().read_text())
    loaded = load_config(copy)
    g = make_guard(tmp_path, "calm", cfg=loaded.config, config_writer=ConfigWriter(loaded))
    a, acct = biggest(g)
    w, c, liq = (float(x[a]) + 0.3 for x in (g.book.warning, g.book.critical, g.book.liquidation))
    assert (await g.command("set_thresholds", TRADER, account=acct, warning=w, critical=c, liquidation=liq)).ok
    text = copy.read_text()
    assert "# at or below: WARNING (alert, enhanced monitoring)" in text
    reloaded = load_config(copy).config
    assert reloaded.overrides[acct].warning == w
    assert g.book.warning[a] == w


async def test_breaching_max_leverage_puts_the_account_in_reducing_with_an_alert(tmp_path):
    from engine.ladder import REDUCE_LEVERAGE

    g = make_guard(tmp_path, "calm", cfg=config(limits={"max_leverage": 10.0}))
    await drive(g, 1)
    over = np.flatnonzero(g.book.acct_notional / g.book.equity > 10.0)
    assert over.size
    assert np.all(g.ladder.reduce_flags[over] & REDUCE_LEVERAGE)
    assert np.all(g.ladder.trading_state[over] == TradingState.REDUCING)
    alerts = [r for r in g.journal.records(kind="alert") if r["category"] == "limit"]
    assert {r["account"] for r in alerts} == {g.book.info[a].id for a in over}


async def test_entering_warning_records_an_assessment_with_the_cheapest_step_back(tmp_path):
    g = make_guard(tmp_path, "demo")
    await drive(g, 40)
    warned = [r["account"] for r in g.journal.records(kind="transition") if r["to_level"] == "WARNING"]
    assert warned
    assessments = {r["account"]: r for r in g.journal.records(kind="assessment")}
    first = assessments[warned[0]]
    assert first["contributors"] and first["liquidation_distance_pct"]
    assert first["cheapest_step"] is None or first["cheapest_step"]["orders"] is not None


async def test_acknowledging_an_alert_is_journaled_and_published(tmp_path):
    g = make_guard(tmp_path, "crash")
    sub = g.subscribe(kinds={"ack"})
    await drive(g, 10)
    alert = next(r for r in g.journal.records(kind="alert") if r["severity"] in ("critical", "emergency"))
    assert not (await g.command("acknowledge", VIEWER, alert_id=alert["alert_id"])).ok
    assert (await g.command("acknowledge", TRADER, alert_id=alert["alert_id"])).ok
    assert [e["alert_id"] for e in sub.drain()] == [alert["alert_id"]]
    assert not (await g.command("acknowledge", TRADER, alert_id="al0")).ok
