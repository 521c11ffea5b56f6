"""Look-aheads for one account, from the engine: the scenario grid (`g`: price moves x
volatility shocks, the ratio coloured by level) and the what-if (`w`: the ratio, level, equity
and maintenance margin after a hypothetical fill). Neither sends anything, so every role may
use them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Button, Input, Label, Select, Static

from capguard_tui.screens.confirm import CommandModal, QuietInput, number_input
from capguard_tui.screens.forms import row
from capguard_tui.widgets import risk

if TYPE_CHECKING:
    from capguard_tui.app import CapguardApp

WIDE = 120  # terminal columns from which the grid shows the PnL beside each ratio


class ScenarioGridScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close", show=False)]
    AUTO_FOCUS = "#close"

    def __init__(self, account: str) -> None:
        super().__init__(classes="dialog-screen")
        self.account = account
        self.grid: dict[str, Any] | None = None

    @property
    def capguard(self) -> CapguardApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Scenario grid {escape(self.account)}", classes="dialog-title")
            yield Static(
                "Margin ratio (eq/MM) with every price moved (rows) and every volatility shocked "
                "(columns), coloured by level" + (", PnL beside it" if self.app.size.width >= WIDE else "") + ".",
                classes="dialog-body",
            )
            yield Static("[dim]computing...[/]", id="grid")
            yield Static("", id="message", classes="dialog-message")
            with Horizontal(classes="buttons"):
                yield Button("Close", id="close", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.load()

    @work(exclusive=True, group="grid")
    async def load(self) -> None:
        app = self.capguard
        try:
            self.grid = await app.ask("scenario_grid", self.account)
        except Exception as exc:
            message = app.view_error("scenario grid", exc)
            self.query_one("#grid", Static).update("")
            self.query_one("#message", Static).set_classes("dialog-message refused")
            self.query_one("#message", Static).update(escape(message))
            return
        self.query_one("#grid", Static).update(risk.grid(self.grid, self.app.size.width >= WIDE))
        ratios = self.grid.get("ratio") or []
        if ratios and len(ratios[0]) > 1 and all(len(set(map(str, row))) == 1 for row in ratios):
            self.query_one("#message", Static).update(
                "[dim]Columns agree: volatility moves no PnL on linear contracts; it moves the ratio "
                "only with the [risk.maintenance] volatility add-on.[/]"
            )

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)


class WhatIfScreen(CommandModal):
    """A hypothetical fill priced by the engine. It reuses the command dialog's layout but
    never calls `send`: the look-ahead changes nothing."""

    SCOPED_CSS = False  # the rules name this screen themselves
    CSS = """
    WhatIfScreen .dialog-body { margin: 0; }
    WhatIfScreen #result { margin-top: 1; }
    """
    TITLE = "What-if"
    BUTTONS = (("preview", "Look ahead", "primary"), ("cancel", "Close", "default"))
    AUTO_FOCUS = "#qty"

    def __init__(self, account: str, positions: list[dict[str, Any]]) -> None:
        super().__init__(account)
        self.positions = {str(p.get("symbol")): float(p.get("qty") or 0.0) for p in positions}
        self.result: dict[str, Any] | None = None

    def fields(self) -> ComposeResult:
        symbols = list(self.positions)
        first = symbols[0] if symbols else ""
        side = "sell" if self.positions.get(first, 0.0) > 0 else "buy"  # the reducing side by default
        offered = ", ".join(symbols) if symbols else "none (type any symbol)"
        yield Static(f"[b]Look-ahead only: nothing is sent.[/] [dim]Holds:[/] {escape(offered)}", classes="dialog-body")
        yield row(
            "symbol",
            QuietInput(
                first,
                placeholder="symbol",
                suggester=SuggestFromList(symbols, case_sensitive=False),
                id="symbol",
                compact=True,
            ),
        )
        yield row(
            "side",
            # not id "side": that is the overview's side panel in capguard.tcss
            Select([("buy", "buy"), ("sell", "sell")], value=side, allow_blank=False, id="fill-side", compact=True),
        )
        yield row("qty", number_input("qty", placeholder="quantity, positive (units of the instrument)"))
        yield row("price", number_input("price", placeholder="blank: at the mark price"))
        yield Static("", id="result", classes="dialog-body")

    def symbol(self) -> str:
        text = self.value("symbol")
        return next((s for s in self.positions if s.lower() == text.lower()), text)

    def request(self) -> tuple[str, str, float, float | None] | None:
        """(symbol, side, qty, price) from the form, or None with the reason shown."""
        symbol, side = self.symbol(), str(self.query_one("#fill-side", Select).value)
        if not symbol:
            self.say("give a symbol")
            return None
        try:
            qty = float(self.value("qty"))
        except ValueError:
            self.say(f"qty must be a number, got {self.value('qty')!r}")
            return None
        price_text = self.value("price")
        try:
            price = float(price_text) if price_text else None
        except ValueError:
            self.say(f"price must be a number or blank (the mark), got {price_text!r}")
            return None
        return symbol, side, qty, price

    @work(exclusive=True, group="what-if")
    async def look_ahead(self) -> None:
        request = self.request()
        if request is None:
            return
        app = self.capguard
        try:
            result = await app.ask("what_if", self.account, *request)
        except Exception as exc:  # the engine's refusal (unknown symbol, bad qty or price), or the link
            self.say(app.view_error("what-if", exc))
            self.query_one("#result", Static).update("")
            self.result = None
            return
        self.result = result
        self.say("priced by the engine; nothing was sent", ok=True)
        self.query_one("#result", Static).update(risk.what_if(result))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.look_ahead()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "preview":
            event.stop()
            self.look_ahead()
        else:
            super().on_button_pressed(event)
