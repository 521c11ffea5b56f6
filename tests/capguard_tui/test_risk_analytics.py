"""Risk analytics in the console, driven with real keys over the real embedded guard: the
stress test (`x`), the scenario grid (`g`), the what-if (`w`) and the book's VaR/ES on the
analytics screen (`5`). Every figure shown is checked against the guard asked directly."""

import asyncio
import threading
from contextlib import contextmanager

import pytest

from capguard_tui import fmt
from capguard_tui.app import CapguardApp
from capguard_tui.screens.detail import AccountDetailScreen
from capguard_tui.screens.lookahead import WIDE, ScenarioGridScreen, WhatIfScreen
from capguard_tui.screens.stress import TOP, StressResultsScreen, StressScreen
from engine.operators import Operator, Role
from engine.remote import RemoteGuardView
from tests.capguard_tui.helpers import drive, make_app, screen_text
from tests.engine.api.support import TOKENS, serving
from tests.engine.guard.support import drive as drive_guard

SIZES = [(80, 24), (160, 48)]


async def settle_ui(app, pilot):
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()


def message(screen) -> str:
    return str(screen.query_one("#message").render())


async def type_into(pilot, selector, text):
    await pilot.click(selector)
    await pilot.press(*text)


@pytest.mark.parametrize("size", SIZES)
async def test_a_configured_scenario_lists_the_engines_worst_account_first(guard, size):
    await drive(guard, 30.0, step=0.5)  # the demo moves: some accounts are off SAFE
    names = [s.name for s in guard.config.risk.scenarios]
    chosen = "crypto crash"
    expected = guard.stress(chosen, top=TOP)
    worst = expected["accounts"][0]
    app = make_app(guard)
    async with app.run_test(size=size) as pilot:
        await settle_ui(app, pilot)
        await pilot.press("x")
        await settle_ui(app, pilot)
        assert isinstance(app.screen, StressScreen)
        text = screen_text(app)
        assert all(name in text for name in names[:3])
        assert "nothing is sent" in text
        await pilot.press(*["down"] * names.index(chosen), "enter")
        await settle_ui(app, pilot)
        screen = app.screen
        assert isinstance(screen, StressResultsScreen)
        assert [a["account"] for a in screen.accounts] == [a["account"] for a in expected["accounts"]]
        text = screen_text(app)
        assert chosen in text
        first_row = next(line for line in text.splitlines() if worst["account"] in line)
        assert f"{fmt.ratio(worst['ratio_before'])}->{fmt.ratio(worst['ratio_after'])}" in first_row
        assert text.index(worst["account"]) < text.index(expected["accounts"][1]["account"])
        await pilot.press("enter")  # the highlighted (worst) account opens
        await settle_ui(app, pilot)
        assert isinstance(app.screen, AccountDetailScreen) and app.screen.account_id == worst["account"]
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen
        await pilot.press("x")  # another scenario replaces this one; Esc goes back to the overview
        await settle_ui(app, pilot)
        await pilot.press("enter")
        await settle_ui(app, pilot)
        assert isinstance(app.screen, StressResultsScreen) and app.screen is not screen
        assert app.screen.result["scenario"]["name"] == names[0]
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, StressResultsScreen)


async def test_an_ad_hoc_scenario_names_the_bad_token_then_runs(guard):
    app = make_app(guard, role=Role.VIEWER, readonly=True)  # looking needs no role
    async with app.run_test(size=(80, 24)) as pilot:
        await settle_ui(app, pilot)
        await pilot.press("x")
        await settle_ui(app, pilot)
        dialog = app.screen
        assert isinstance(dialog, StressScreen)
        await type_into(pilot, "#moves", "BTCUSDT -1x%, * -5%")
        await pilot.press("enter")
        await settle_ui(app, pilot)
        assert app.screen is dialog
        assert "'-1x%'" in message(dialog) and "BTCUSDT" in message(dialog)
        await pilot.press("ctrl+a", "ctrl+k", *"NOPEUSDT -15%")  # parses; the engine refuses the key
        await pilot.press("enter")
        await settle_ui(app, pilot)
        assert app.screen is dialog and "unknown key 'NOPEUSDT'" in message(dialog)
        await pilot.press("ctrl+a", "ctrl+k", *"BTCUSDT -15%, * -5%")
        await type_into(pilot, "#vol", "* +50%")
        await pilot.press("enter")
        await settle_ui(app, pilot)
        screen = app.screen
        assert isinstance(screen, StressResultsScreen)
        expected = guard.stress({"moves": {"BTCUSDT": -0.15, "*": -0.05}, "vol_shocks": {"*": 0.5}}, top=TOP)
        assert screen.accounts[0]["account"] == expected["accounts"][0]["account"]
        assert screen.result["scenario"]["moves"] == {"BTCUSDT": -0.15, "*": -0.05}
        assert "BTCUSDT -15%" in screen_text(app)


@pytest.mark.parametrize("size", SIZES)
async def test_the_grid_shows_the_current_ratio_with_no_move_and_no_shock(guard, size):
    await drive(guard, 20.0, step=0.5)
    app = make_app(guard)
    async with app.run_test(size=size) as pilot:
        await settle_ui(app, pilot)
        await pilot.press("enter")
        await settle_ui(app, pilot)
        account = app.screen.account_id
        await pilot.press("g")
        await settle_ui(app, pilot)
        assert isinstance(app.screen, ScenarioGridScreen)
        grid = guard.scenario_grid(account)
        row, col = grid["price_moves"].index(0.0), grid["vol_shocks"].index(0.0)
        current = float(guard.snapshot().columns["margin_ratio"][guard.account_index(account)])
        inside = [line.split("│")[1] for line in screen_text(app).splitlines() if line.count("│") >= 2]
        rows = [cells.split() for cells in inside]  # the dialog's lines, inside its border
        zero = next(tokens for tokens in rows if tokens and tokens[0] == "+0%")
        shown = zero[2::2] if size[0] >= WIDE else zero[1:]  # wide: PnL then ratio per cell
        assert shown[col] == fmt.ratio(current)
        assert fmt.ratio(grid["ratio"][row][col]) == fmt.ratio(current)
        # No volatility add-on in the demo: the columns agree, and the dialog says why.
        assert all(len(set(r)) == 1 for r in grid["ratio"])
        assert "Columns agree" in " ".join(line.strip("│ ") for line in screen_text(app).splitlines())
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, AccountDetailScreen)


@pytest.mark.parametrize("size", SIZES)
async def test_what_if_shows_the_engines_ratio_after_and_sends_nothing(guard, size):
    app = make_app(guard, role=Role.VIEWER)
    async with app.run_test(size=size) as pilot:
        await settle_ui(app, pilot)
        ids = guard.snapshot().ids
        account = next(  # cross margin: any fill moves the account's ratio
            a
            for a in ids
            if guard.account_detail(a)["margin_mode"] == "cross"
            and guard.account_detail(a)["positions"]
            and sum(a in other for other in ids) == 1
        )
        await pilot.press("slash", *account, "enter", "enter")  # filter to it, open it
        await settle_ui(app, pilot)
        assert app.screen.account_id == account
        positions = guard.account_detail(account)["positions"]
        symbol, held = positions[0]["symbol"], positions[0]["qty"]
        operator_records = len(guard.journal.records(kind="operator"))
        orders = len(guard.journal.records(kind="order"))
        await pilot.press("w")
        await settle_ui(app, pilot)
        dialog = app.screen
        assert isinstance(dialog, WhatIfScreen)
        assert "nothing is sent" in screen_text(app)
        assert dialog.query_one("#symbol").value == symbol  # the account's own symbol is offered
        assert dialog.query_one("#fill-side").value == ("sell" if held > 0 else "buy")  # reducing by default
        qty = round(abs(held) / 2, 6)
        await pilot.press(*str(qty), "enter")  # the qty box has the focus; blank price: the mark
        await settle_ui(app, pilot)
        side = "sell" if held > 0 else "buy"
        expected = guard.what_if(account, symbol, side, qty)
        assert fmt.ratio(expected["ratio_after"]) != fmt.ratio(expected["ratio_before"])  # a fill that shows
        assert dialog.result is not None and dialog.result["ratio_after"] == expected["ratio_after"]
        lines = [line.split("│")[1] for line in screen_text(app).splitlines() if line.count("│") >= 2]
        ratio_line = next(line.split() for line in lines if line.split()[:1] == ["ratio"])
        assert ratio_line[1:] == [fmt.ratio(expected["ratio_before"]), "->", fmt.ratio(expected["ratio_after"])]
        mm_line = next(line for line in lines if line.strip().startswith("maint. margin"))
        assert fmt.money(expected["maintenance_margin_after"]) in mm_line
        assert expected["level_after"] in next(line for line in lines if line.strip().startswith("level"))
        # Bad input: the engine's own message, the dialog stays, nothing crashes.
        await type_into(pilot, "#symbol", "")
        await pilot.press("ctrl+a", "ctrl+k", *"NOPEUSDT", "enter")
        await settle_ui(app, pilot)
        assert app.screen is dialog and "unknown symbol 'NOPEUSDT'" in message(dialog)
        assert dialog.result is None
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, AccountDetailScreen)
    assert len(guard.journal.records(kind="operator")) == operator_records
    assert len(guard.journal.records(kind="order")) == orders


@pytest.mark.parametrize("size", SIZES)
async def test_the_analytics_screen_shows_the_books_var_and_scenarios(guard, size):
    await drive(guard, 30.0, step=0.5)
    app = make_app(guard)
    async with app.run_test(size=size) as pilot:
        await settle_ui(app, pilot)
        await pilot.press("5")
        await settle_ui(app, pilot)
        expected = guard.book_risk()
        text = screen_text(app)
        assert "Book VaR / ES" in text and f"{expected['confidence'] * 100:g}%" in text
        parametric = next(line for line in text.splitlines() if line.strip().startswith("parametric"))
        assert fmt.money(expected["var"]["parametric"]) in parametric
        assert fmt.money(expected["es"]["parametric"]) in parametric
        monte_carlo = next(line for line in text.splitlines() if line.strip().startswith("Monte Carlo"))
        assert fmt.money(expected["var"]["monte_carlo"]) in monte_carlo
        first = expected["scenarios"][0]
        row = next(line for line in text.splitlines() if f" {first['name']} " in f" {line}")
        assert str(first["worst_account"])[:17] in row and fmt.ratio(first["worst_ratio"]) in row
        calls = app.refreshes
        fetched = app.state.book_risk
        await pilot.pause(1.0)  # four refreshes at 4 Hz, but book_risk is not asked again yet
        assert app.refreshes > calls and app.state.book_risk is fetched


@contextmanager
def served_in_a_thread(tmp_path):
    """A real guard behind its real API server on a loop of its own (the console's GuardView
    reads are blocking HTTP calls: they must not share the server's loop)."""
    ready, held = threading.Event(), {}

    async def serve():
        async with serving(tmp_path, "crash") as (g, server):
            await drive_guard(g, 20)
            held.update(g=g, server=server, loop=asyncio.get_running_loop(), stop=asyncio.Event())
            ready.set()
            await held["stop"].wait()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert ready.wait(30), "the API server did not start"
    try:
        yield held["g"], held["server"]
    finally:
        held["loop"].call_soon_threadsafe(held["stop"].set)
        thread.join(30)


async def test_the_same_keys_work_over_a_remote_guard(tmp_path):
    with served_in_a_thread(tmp_path) as (g, server):
        remote = RemoteGuardView(server.url, TOKENS["viewer"])
        await remote.start(wait=5)
        app = CapguardApp(remote, Operator("vic", Role.VIEWER), run_guard=False)
        try:
            async with app.run_test(size=(80, 24)) as pilot:
                await settle_ui(app, pilot)
                await pilot.press("x")
                await settle_ui(app, pilot)
                names = [s.name for s in g.config.risk.scenarios]
                await pilot.press(*["down"] * names.index("crypto crash"), "enter")
                await settle_ui(app, pilot)
                screen = app.screen
                assert isinstance(screen, StressResultsScreen)
                expected = g.stress("crypto crash", top=TOP)
                assert screen.accounts[0]["account"] == expected["accounts"][0]["account"]
                await pilot.press("escape", "x")
                await settle_ui(app, pilot)
                await type_into(pilot, "#moves", "NOPEUSDT -15%")
                await pilot.press("enter")
                await settle_ui(app, pilot)  # the guard's 422, in the engine's words, over HTTP
                assert isinstance(app.screen, StressScreen) and "unknown key 'NOPEUSDT'" in message(app.screen)
                await pilot.press("escape")
                await pilot.pause()
                account = app.screen.current_account()
                await pilot.press("g")  # from the overview: the selected account
                await settle_ui(app, pilot)
                assert isinstance(app.screen, ScenarioGridScreen)
                assert app.screen.grid == g.scenario_grid(account)
        finally:
            await remote.aclose()


async def test_the_new_keys_are_in_help_and_the_palette_and_can_be_remapped(guard):
    app = make_app(guard, role=Role.VIEWER, readonly=True, keymap={"stress": "z", "what_if": "W"})
    async with app.run_test(size=(160, 48)) as pilot:
        await settle_ui(app, pilot)
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {
            "Stress test: a configured or ad-hoc scenario",
            "What-if: a hypothetical fill (sends nothing)",
        } <= titles
        await pilot.press("question_mark")
        await pilot.pause()
        text = screen_text(app)
        assert "stress" in text and "scenario_grid" in text and "what_if" in text
        await pilot.press("escape", "x")  # remapped away: x does nothing now
        await pilot.pause()
        assert not isinstance(app.screen, StressScreen)
        await pilot.press("z")
        await settle_ui(app, pilot)
        assert isinstance(app.screen, StressScreen)
        await pilot.press("escape", "W")
        await settle_ui(app, pilot)
        assert isinstance(app.screen, WhatIfScreen)
