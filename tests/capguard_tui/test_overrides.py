"""Every override key, driven like a trader would, checked against the guard and its journal."""

import numpy as np
import pytest

from capguard_tui.screens.forms import ThresholdsScreen
from capguard_tui.screens.orders import DeleverageScreen
from engine.config import load_config
from engine.operators import Role
from tests.capguard_tui.helpers import drive, make_app, settle

DEBOUNCE = 0.55  # a second press of the same key inside 0.5 s is ignored on purpose


def gross(guard, account):
    return float(np.abs(guard.book.notional[guard.book.account_positions(guard.account_index(account))]).sum())


async def type_into(pilot, selector, text):
    await pilot.click(selector)
    await pilot.press(*text)


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_deleverage_shows_the_dry_run_and_sends_exactly_those_orders(guard, size):
    app = make_app(guard)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        account = app.screen.current_account()
        before = gross(guard, account)
        await pilot.press("d")
        await pilot.pause()
        await app.workers.wait_for_complete()
        modal = app.screen
        assert isinstance(modal, DeleverageScreen) and modal.plan is not None
        shown = [(o["symbol"], o["qty"]) for o in modal.plan["orders"]]
        assert guard.journal.records(kind="plan", account=account)[-1]["dry_run"] is True
        await pilot.press("tab", "enter")  # Send... then the y/n confirmation
        await pilot.pause()
        assert app.focused.id == "no"  # the safe choice has the focus
        await pilot.press("y")
        await app.workers.wait_for_complete()
        await settle(guard)
        await pilot.pause()
        op = guard.journal.records(kind="operator", account=account)[-1]
        assert op["command"] == "deleverage" and op["operator"] == "tester"
        assert [(o["symbol"], o["qty"]) for o in op["params"]["confirm_plan"]] == shown
        outcome = guard.journal.records(kind="outcome", account=account)[-1]
        assert outcome["complete"] and outcome["ratio_after"] > outcome["ratio_before"]
        assert gross(guard, account) < before
        assert not isinstance(app.screen, DeleverageScreen)
        assert any(line.text.startswith("deleverage: deleverage") for line in app.state.log)


async def test_a_plan_that_moved_is_shown_again_before_anything_is_sent(guard):
    app = make_app(guard)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        account = app.screen.current_account()
        await pilot.press("d")
        await app.workers.wait_for_complete()
        modal = app.screen
        first = [(o["symbol"], o["qty"]) for o in modal.plan["orders"]]
        target = modal.plan["target"]  # the console sends the target it showed
        for _ in range(40):  # let the market move until the engine would plan differently
            await drive(guard, 2.0)
            result = await guard.command("deleverage", app.operator, account=account, dry_run=True, target_ratio=target)
            if [(o["symbol"], o["qty"]) for o in result.plan["orders"]] != first:
                break
        sent_before = len(guard.journal.records(kind="operator", account=account))
        await pilot.press("tab", "enter", "y")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.screen is modal
        assert "the plan moved" in str(modal.query_one("#message").render())
        assert [(o["symbol"], o["qty"]) for o in modal.plan["orders"]] != first
        assert len(guard.journal.records(kind="operator", account=account)) == sent_before
        await pilot.press("escape")


async def test_a_threshold_edit_is_written_to_the_toml_with_its_comments(guard, loaded):
    app = make_app(guard)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        account = app.screen.current_account()
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, ThresholdsScreen)
        old = float(guard.book.warning[guard.account_index(account)])
        new = round(old + 0.5, 2)
        await pilot.press(*str(new))  # the warning box has the focus, its text selected
        await type_into(pilot, "#reason", "event")
        await pilot.click("#save")
        await pilot.pause()
        assert not isinstance(app.screen, ThresholdsScreen)
    text = loaded.path.read_text()
    assert "# Seed thresholds on the margin ratio." in text and "# dwell" not in text.split("[ladder]")[0]
    assert "# seconds before an incomplete liquidation is retried" in text
    assert load_config(loaded.path).config.overrides[account].warning == new
    record = guard.journal.records(kind="threshold", account=account)[-1]
    assert record["after"]["warning"] == new and record["reason"] == "event"
    assert guard.book.warning[guard.account_index(account)] == new


async def test_a_trader_cannot_loosen_thresholds_and_sees_why(guard, loaded):
    app = make_app(guard, role=Role.TRADER)
    before = loaded.path.read_text()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        account = app.screen.current_account()
        old = float(guard.book.warning[guard.account_index(account)])
        critical = float(guard.book.critical[guard.account_index(account)])
        await pilot.press("t")
        await pilot.pause()
        await pilot.press(*f"{(old + critical) / 2:.3f}")
        await type_into(pilot, "#reason", "room")
        await pilot.click("#save")
        await pilot.pause()
        assert isinstance(app.screen, ThresholdsScreen)  # stays open with the engine's message
        message = str(app.screen.query_one("#message").render())
        assert "needs the risk role" in message and "trader" in message
    assert loaded.path.read_text() == before
    refused = guard.journal.records(kind="operator", account=account)[-1]
    assert refused["command"] == "set_thresholds" and "risk role" in refused["refused"]
    assert guard.book.warning[guard.account_index(account)] == old


async def test_hold_then_resume(guard):
    app = make_app(guard)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        account = app.screen.current_account()
        a = guard.account_index(account)
        await pilot.press("h")
        await pilot.pause()
        await type_into(pilot, "#reason", "call")
        await pilot.click("#hold")
        await pilot.pause()
        assert guard.ladder.held_until[a] == pytest.approx(guard.clock.now() + 900)
        assert guard.account_detail(account)["held_until"] is not None
        await pilot.pause(DEBOUNCE)
        await pilot.press("h")
        await pilot.pause()
        await pilot.click("#resume")
        await pilot.pause()
        assert np.isnan(guard.ladder.held_until[a])
    commands = [r["command"] for r in guard.journal.records(kind="operator", account=account)]
    assert commands == ["hold", "resume"]


async def test_reset_re_enables_a_halted_account_after_confirmation(guard):
    app = make_app(guard)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        account = app.screen.current_account()
        await guard.command("liquidate", app.operator, account=account, confirm=account, mode="immediate")
        await settle(guard)
        a = guard.account_index(account)
        assert guard.ladder.halted[a]
        await pilot.press("r")
        await pilot.pause()
        await type_into(pilot, "#reason", "ok")
        await pilot.click("#reset")
        await pilot.pause()
        await pilot.press("y")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert not guard.ladder.halted[a]
    assert guard.journal.records(kind="operator", account=account)[-1]["command"] == "reset"


async def test_schedule_and_cancel_a_deleverage(guard):
    app = make_app(guard)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        account = app.screen.current_account()
        await pilot.press("S")
        await pilot.pause()
        await pilot.click("#schedule")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert [s["account"] for s in guard.protection.schedule.values()] == [account]
        (sid,) = guard.protection.schedule
        await pilot.pause(DEBOUNCE)
        await pilot.press("S")
        await pilot.pause()
        await pilot.click(f"#unschedule-{sid}")
        await pilot.pause()
        assert guard.protection.schedule == {}
    events = [r["event"] for r in guard.journal.records(kind="schedule", account=account)]
    assert events == ["scheduled", "cancelled"]


async def test_kill_switch_engage_and_release_each_need_a_yes(guard):
    app = make_app(guard)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("K")
        await pilot.pause()
        await type_into(pilot, "#reason", "drill")
        await pilot.click("#toggle")
        await pilot.pause()
        await pilot.press("n")  # said no: nothing happens
        await pilot.pause()
        assert not guard.protection.kill_switch
        await pilot.click("#toggle")
        await pilot.pause()
        await pilot.press("y")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert guard.protection.kill_switch
        for _ in range(30):  # the badge follows the next snapshot refresh (4 Hz)
            if "KILL SWITCH" in app.badges():
                break
            await pilot.pause(0.1)
        assert "KILL SWITCH" in app.badges()
        await pilot.pause(DEBOUNCE)
        await pilot.press("K")
        await pilot.pause()
        await type_into(pilot, "#reason", "done")
        await pilot.click("#toggle")
        await pilot.pause()
        await pilot.press("y")
        await app.workers.wait_for_complete()
        assert not guard.protection.kill_switch
    engaged = [r["engage"] for r in guard.journal.records(kind="operator") if r.get("command") == "kill_switch"]
    assert engaged == [True, False]


async def test_releasing_a_breaker_that_is_not_tripped_shows_the_engine_refusal(guard):
    app = make_app(guard)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("B")
        await pilot.pause()
        await type_into(pilot, "#reason", "t")
        await pilot.click("#release")
        await pilot.pause()
        await pilot.press("y")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "not tripped" in str(app.screen.query_one("#message").render())
        assert not app.state.log[0].ok


async def test_acknowledge_the_newest_alert(guard):
    app = make_app(guard)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        account = app.screen.current_account()
        await guard.command("liquidate", app.operator, account=account, confirm=account, mode="immediate")
        await settle(guard)
        app.refresh_now()
        assert app.state.open_alerts(account)
        await pilot.press("a")
        await pilot.pause()
        assert not app.state.open_alerts(account)
        alert = app.state.alerts[0]
        assert alert.acknowledged_by == "tester"
        assert "acknowledged" in app.state.log[0].text
    ack = [r for r in guard.journal.records(kind="operator") if r.get("command") == "acknowledge"]
    assert [(r["alert_id"], r["operator"]) for r in ack] == [(alert.alert_id, "tester")]


async def test_a_repeated_destructive_key_is_debounced(guard):
    app = make_app(guard)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        overview = app.screen
        overview.action_kill_switch()
        overview.action_kill_switch()  # the same key again at once (held or bounced): ignored
        await pilot.pause()
        assert len(app.screen_stack) == 2  # one dialog, not two
        await pilot.press("escape")
        await pilot.pause(DEBOUNCE)
        await pilot.press("K")
        await pilot.pause()
        assert len(app.screen_stack) == 2


async def test_a_viewer_sees_override_keys_disabled_with_the_reason(guard):
    app = make_app(guard, role=Role.VIEWER)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        assert app.screen.check_action("liquidate", ()) is None  # shown, disabled
        await pilot.press("L", "d", "K")
        await pilot.pause()
        assert len(app.screen_stack) == 1
        said = [n.message for n in app._notifications]
        assert "Liquidate (type the account id): needs the risk role (you are viewer)" in said
        await pilot.press("question_mark")
        await pilot.pause()
        text = str(app.screen.query_one("Static").render())
        assert "needs the risk role (you are viewer)" in text
        assert "needs the trader role (you are viewer)" in text


async def test_readonly_removes_every_override_key(guard):
    app = make_app(guard, readonly=True)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        assert app.screen.check_action("liquidate", ()) is False
        await pilot.press("L", "t", "h", "K")
        await pilot.pause()
        assert len(app.screen_stack) == 1
        footer = " ".join(str(w.render()) for w in app.screen.query("FooterKey"))
        assert "liquidate" not in footer and "sort" in footer
        await pilot.press("question_mark")
        await pilot.pause()
        text = str(app.screen.query_one("Static").render())
        assert "Liquidate" not in text and "read-only" in text
