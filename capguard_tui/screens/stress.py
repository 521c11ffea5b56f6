"""Stress test (`x`, everywhere): pick a configured scenario or type an ad-hoc one, then see
every account worst first under it, from `GuardView.stress`. Nothing is sent: the engine
re-values a copy of the book."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from capguard_tui import keys
from capguard_tui.scenario_text import ad_hoc_scenario
from capguard_tui.screens.confirm import text_input
from capguard_tui.screens.forms import row
from capguard_tui.widgets import risk

if TYPE_CHECKING:
    from capguard_tui.app import CapguardApp

TOP = 50  # accounts shown, worst first (the engine sorts and cuts)
AD_HOC_HINT = (
    "[b]or ad-hoc[/] [dim]KEY SHOCK, ... where KEY is a symbol, underlying, group or * (all);"
    " a shock is -15% or -0.15[/]"
)


class StressScreen(ModalScreen[None]):
    """Enter on a configured scenario runs it; Enter in a field (or Run) runs the ad-hoc one."""

    SCOPED_CSS = False  # the rules name this screen themselves
    CSS = """
    StressScreen #scenarios { height: auto; max-height: 8; }
    StressScreen .dialog-body { margin: 0; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", show=False)]
    AUTO_FOCUS = "#scenarios"

    def __init__(self) -> None:
        super().__init__(classes="dialog-screen")
        self.names: list[str] = []

    @property
    def capguard(self) -> CapguardApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Stress test  [dim]a look-ahead: nothing is sent[/]", classes="dialog-title")
            yield Static("Configured scenarios [dim](Enter runs one)[/]", classes="dialog-body")
            yield OptionList(id="scenarios", compact=True)
            yield Static(AD_HOC_HINT, classes="dialog-body")
            yield row("price moves", text_input("moves", placeholder="BTCUSDT -15%, majors -10%, * -5%"))
            yield row("vol shocks", text_input("vol", placeholder="* +50%"))
            yield Static("", id="message", classes="dialog-message")
            with Horizontal(classes="buttons"):
                yield Button("Run ad-hoc", id="run", variant="warning", compact=True)
                yield Button("Cancel", id="cancel", variant="primary", compact=True)

    def on_mount(self) -> None:
        known = self.capguard.state.book_risk
        if known is not None:
            self.show_scenarios(known)
        else:
            self.query_one("#scenarios", OptionList).add_option(Option("[dim]loading...[/]", disabled=True))
            self.load_scenarios()

    @work(exclusive=True, group="stress-list")
    async def load_scenarios(self) -> None:
        app = self.capguard
        try:
            result = await app.ask("book_risk")
        except Exception as exc:  # the ad-hoc fields still work without the list
            self.say(f"configured scenarios unavailable: {app.view_error('stress scenarios', exc)}")
            self.query_one("#scenarios", OptionList).clear_options()
            return
        app.state.book_risk = result
        self.show_scenarios(result)

    def show_scenarios(self, book_risk: dict[str, Any]) -> None:
        items = book_risk.get("scenarios") or []
        self.names = [str(s.get("name")) for s in items]
        olist = self.query_one("#scenarios", OptionList)
        olist.clear_options()
        for i, s in enumerate(items):
            desc = f"  [dim]{escape(str(s['description']))}[/]" if s.get("description") else ""
            olist.add_option(Option(f"{escape(str(s.get('name')))}{desc}", id=f"s{i}"))
        if not items:
            olist.add_option(Option("[dim]none configured: type an ad-hoc scenario below[/]", disabled=True))
        else:
            olist.highlighted = 0

    def say(self, text: str) -> None:
        msg = self.query_one("#message", Static)
        msg.set_classes("dialog-message refused")
        msg.update(escape(text))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        index = event.option_index
        if 0 <= index < len(self.names):
            self.run_stress(self.names[index])

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._ad_hoc()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "run":
            self._ad_hoc()
        else:
            self.dismiss(None)

    def _ad_hoc(self) -> None:
        moves = self.query_one("#moves", Input).value
        vol = self.query_one("#vol", Input).value
        try:
            scenario = ad_hoc_scenario(moves, vol)
        except ValueError as exc:  # the operator's typing: say which token, keep the dialog
            self.say(str(exc))
            return
        self.run_stress(scenario)

    @work(exclusive=True, group="stress")
    async def run_stress(self, scenario: dict[str, Any] | str) -> None:
        app = self.capguard
        self.say("")
        try:
            result = await app.ask("stress", scenario, top=TOP)
        except Exception as exc:  # unknown key or scenario, impossible shock, link down
            self.say(app.view_error("stress test", exc))
            return
        self.dismiss(None)
        if isinstance(app.screen, StressResultsScreen):  # another scenario replaces the last one
            app.switch_screen(StressResultsScreen(result))
        else:
            app.push_screen(StressResultsScreen(result))

    def action_cancel(self) -> None:
        self.dismiss(None)


class StressResultsScreen(Screen[None]):
    """Accounts worst first under one scenario; Enter opens the highlighted account."""

    SCOPED_CSS = False  # the rules name this screen themselves
    CSS = """
    StressResultsScreen #stress-title { height: auto; background: $panel; padding: 0 1; }
    StressResultsScreen #stress-head { height: 1; padding: 0 1; text-style: dim; }
    StressResultsScreen #stress-rows { padding: 0 1; }
    StressResultsScreen #stress-status { height: 1; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = keys.bindings("screen")
    AUTO_FOCUS = "#stress-rows"

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__()
        self.result = result
        self.accounts: list[dict[str, Any]] = list(result.get("accounts") or [])

    def compose(self) -> ComposeResult:
        yield Static(risk.stress_title(self.result), id="stress-title")
        yield Static("", id="stress-head")
        yield OptionList(id="stress-rows", compact=True)
        yield Static(
            f"[dim]{len(self.accounts)} worst accounts  Enter open  x another scenario  Esc back[/]", id="stress-status"
        )
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._draw()

    def on_resize(self) -> None:
        self._draw()

    def _draw(self) -> None:
        width = max(self.size.width - 2, 40)
        self.query_one("#stress-head", Static).update(escape(risk.stress_header(width)))
        olist = self.query_one("#stress-rows", OptionList)
        keep = olist.highlighted
        olist.set_options(Option(risk.stress_row(a, width), id=f"r{i}") for i, a in enumerate(self.accounts))
        if self.accounts:
            olist.highlighted = keep if keep is not None and keep < len(self.accounts) else 0

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        account = self.accounts[event.option_index].get("account")
        if account is not None:
            self.app.open_account(str(account))  # type: ignore[attr-defined]

    def action_back(self) -> None:
        self.app.pop_screen()
