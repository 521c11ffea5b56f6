"""The overview table and the screens around it, as a trader moves through them."""

import numpy as np
import pytest

from capguard_tui.screens.detail import AccountDetailScreen
from capguard_tui.screens.help import HelpScreen
from capguard_tui.widgets.accounts import AccountsTable, visible_rows
from tests.capguard_tui.helpers import drive, make_app, screen_text


async def test_most_endangered_first_and_the_cursor_follows_its_account(guard):
    app = make_app(guard)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        table = app.screen.query_one(AccountsTable)
        ratios = guard.snapshot().columns["margin_ratio"][table.model.order]
        assert np.all(np.diff(ratios[np.isfinite(ratios)]) >= 0)  # ratio ascending by default
        assert "ratio eq/MM" in screen_text(app)
        await pilot.press("down", "down")
        chosen = table.model.selected
        assert chosen == guard.snapshot().ids[int(table.model.order[2])]
        await drive(guard, 30.0, step=1.0)  # prices move, the order changes
        app.refresh_now()
        await pilot.pause()
        assert table.model.selected == chosen
        assert guard.snapshot().ids[int(table.model.order[table.model.cursor])] == chosen
        while table.model.sort_key != "level":  # s cycles the columns; level: most severe first
            await pilot.press("s")
        assert table.model.selected == chosen
        levels = guard.snapshot().columns["level"][table.model.order]
        assert np.all(np.diff(levels) <= 0)
        await pilot.press("end")
        assert table.model.cursor == len(table.model.order) - 1
        await pilot.press("home", "pagedown")
        assert table.model.cursor > 10


async def test_filter_by_text_level_and_desk(guard):
    app = make_app(guard)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        table = app.screen.query_one(AccountsTable)
        await pilot.press("slash", *"momo", "enter")
        ids = {guard.snapshot().ids[i] for i in table.model.order}
        assert ids == {"d1-momo-01", "d1-momo-02"}
        assert table.has_focus
        await pilot.press("escape", "slash", *"desk:basis level:w")
        snap = guard.snapshot()
        assert all(snap.desks[i] == "basis" and snap.columns["level"][i] >= 1 for i in table.model.order)
        await pilot.press("escape")
        assert len(table.model.order) == len(snap)


async def test_enter_opens_the_account_and_escape_comes_back(guard):
    await_app = make_app(guard)
    async with await_app.run_test(size=(160, 48)) as pilot:
        app = await_app
        await pilot.pause()
        account = app.screen.current_account()
        await drive(guard, 20.0, step=1.0)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, AccountDetailScreen) and app.screen.account_id == account
        text = screen_text(app)
        for heading in (
            "Positions",
            "Open orders",
            "Margin ratio",
            "Effective thresholds",
            "Latest action",
            "Cheapest step back to SAFE",
            "Scheduled",
            "Risk timeline",
        ):
            assert heading in text, heading
        assert account in text
        await pilot.press("escape")
        assert not isinstance(app.screen, AccountDetailScreen)


async def test_every_screen_opens_and_shows_engine_data(guard):
    app = make_app(guard)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        account = app.screen.current_account()
        await guard.command("liquidate", app.operator, account=account, confirm=account, mode="immediate")
        await drive(guard, 10.0, step=1.0)
        await pilot.press("2")
        await pilot.pause()
        assert "Alerts" in screen_text(app) and f"manual liquidation: {account}" in screen_text(app)
        await pilot.press("3")
        await pilot.pause()
        assert "Actions and history" in screen_text(app) and "liquidate" in screen_text(app)
        await pilot.press("4")
        await pilot.pause()
        assert "Risk heatmap" in screen_text(app) and "retail-mm" in screen_text(app)
        await pilot.press("g")
        await pilot.pause()
        assert "scalping" in screen_text(app)
        await pilot.press("5")
        await pilot.pause()
        text = screen_text(app)
        assert "Analytics" in text and account in text and "Time to recover" in text
        await pilot.press("escape")
        assert app.current_mode == "overview"


async def test_help_lists_the_registry_and_the_palette_runs_actions(guard):
    app = make_app(guard)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = str(app.screen.query_one("Static").render())
        assert "Liquidate (type the account id)" in text and "liquidate" in text and "[console.keys]" in text
        await pilot.press("escape")
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Theme: light" in titles and "Kill switch: engage / release" in titles
        next(c for c in app.get_system_commands(app.screen) if c.title == "Theme: high-contrast").callback()
        await pilot.pause()
        assert app.theme == "high-contrast"


async def test_p_pauses_the_simulated_feed(guard):
    app = make_app(guard)
    async with app.run_test(size=(80, 24)) as pilot:
        guard.feed.paused = False
        await pilot.pause()
        await pilot.press("p")
        assert guard.feed.paused
        for _ in range(30):  # the badge follows the next snapshot refresh
            if "FEED PAUSED" in app.badges():
                break
            await pilot.pause(0.1)
        assert "FEED PAUSED" in app.badges()
        await pilot.press("p")
        assert not guard.feed.paused


async def test_quit_stops_the_guard_loop_cleanly(guard):
    app = make_app(guard, run_guard=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.3)
        assert guard.version > 0  # the loop ran inside the app
        await pilot.press("q")
        await pilot.pause()
    assert guard.journal.last("system")["event"] == "guard_stop"


async def test_only_visible_rows_are_rendered_from_the_arrays(guard):
    app = make_app(guard)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        table = app.screen.query_one(AccountsTable)
        shown = visible_rows(table)
        assert 0 < len(shown) < len(guard.snapshot())  # 18 rows on screen, 26 accounts
        text = screen_text(app)
        assert guard.snapshot().ids[int(shown[-1])] in text
        assert guard.snapshot().ids[int(table.model.order[-1])] not in text


async def test_keys_are_remapped_from_the_console_keys_table(guard):
    app = make_app(guard, keymap={"liquidate": "ctrl+l", "sort": "o"})
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("L")
        await pilot.pause()
        assert len(app.screen_stack) == 1  # the old key no longer liquidates
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert type(app.screen).__name__ == "LiquidateScreen"
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("o")
        assert app.screen.query_one(AccountsTable).model.sort_key != "ratio"


def test_an_unknown_action_in_the_keys_table_is_refused_by_name(guard):
    with pytest.raises(ValueError, match=r"console\.keys: unknown action id.*liquidte"):
        make_app(guard, keymap={"liquidte": "x"})
