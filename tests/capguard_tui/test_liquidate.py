"""Liquidation from the console: type the account id, the positions close; cancel changes nothing."""

import numpy as np
import pytest

from tests.capguard_tui.helpers import copy_config, make_app, make_guard, screen_text, settle


def open_qty(guard, account):
    a = guard.account_index(account)
    return np.abs(guard.book.pos_qty[guard.book.account_positions(a)]).sum()


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_a_confirmed_liquidation_closes_every_position_and_is_journaled(tmp_path, size):
    loaded = copy_config(tmp_path, lambda t: t.replace('mode = "orderly"', 'mode = "immediate"'))
    guard = make_guard(tmp_path, loaded)
    app = make_app(guard)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        account = app.screen.current_account()
        assert open_qty(guard, account) > 0
        await pilot.press("L")
        await pilot.pause()
        assert app.focused.id == "cancel"  # the safe choice has the focus
        await pilot.press("shift+tab")  # to the account id box
        await pilot.press(*account, "enter")
        await pilot.pause()
        await settle(guard)
        await pilot.pause()
        assert open_qty(guard, account) == 0
        ops = guard.journal.records(kind="operator", account=account)
        assert [o["command"] for o in ops] == ["liquidate"] and ops[0]["operator"] == "tester"
        outcome = guard.journal.records(kind="outcome", account=account)
        assert outcome and outcome[-1]["complete"]
        assert app.screen.id != "liquidate"
        # The outcome is in the action log (the engine's own words).
        assert any(f"liquidate: liquidating {account}" in line.text for line in app.state.log)
        assert "liquidate" in screen_text(app)
    guard.journal.close()


async def test_escape_cancels_a_liquidation_and_nothing_changes(guard):
    app = make_app(guard)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        account = app.screen.current_account()
        before = open_qty(guard, account)
        seq = guard.journal.head()[0]
        await pilot.press("L")
        await pilot.press("shift+tab", *account)  # typed, but never confirmed
        await pilot.press("escape")
        await pilot.pause()
        await settle(guard)
        assert open_qty(guard, account) == before
        assert guard.journal.head()[0] == seq
        assert not guard.ladder.halted[guard.account_index(account)]


@pytest.mark.parametrize("key", ["L", "d", "t", "h", "S", "K"])
async def test_the_cancel_button_closes_every_dialog_and_the_console_keeps_running(guard, key):
    app = make_app(guard)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        seq = guard.journal.head()[0]
        await pilot.press(key)
        await pilot.pause()
        dialog = app.screen
        assert dialog.query("#cancel"), f"{key} opened no dialog with a Cancel button"
        await pilot.click("#cancel")
        await pilot.pause()
        assert app.screen is not dialog and app.is_running
        assert guard.journal.head()[0] == seq or all(
            r["kind"] not in ("operator", "order_intent") for r in guard.journal.records(after_seq=seq)
        )
