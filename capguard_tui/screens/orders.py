"""The dialogs that send orders: deleverage (dry run first, then exactly the orders shown) and
liquidate (type the account id)."""

from __future__ import annotations

from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.markup import escape
from textual.widgets import Button, Input, Select, Static

from capguard_tui import fmt
from capguard_tui.screens.confirm import CommandModal, number_input, text_input
from capguard_tui.screens.forms import row
from capguard_tui.widgets.plan import plan_markup

STRATEGIES = ("risk", "proportional", "time", "market")
METHODS = ("market", "limit", "stop", "twap")


def plan_diff(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> str:
    """What changed between the orders shown and the engine's new plan, in words."""
    old = {o["symbol"]: o["qty"] for o in before}
    new = {o["symbol"]: o["qty"] for o in after}
    changes = []
    for symbol in dict.fromkeys([*old, *new]):
        a, b = old.get(symbol), new.get(symbol)
        if a != b:
            changes.append(
                f"{symbol} {fmt.qty(a) if a is not None else 'none'} -> {fmt.qty(b) if b is not None else 'none'}"
            )
    return "; ".join(changes) or "same orders, new prices"


class DeleverageScreen(CommandModal):
    """Dry run first: the orders and the projected ratio; Send confirms exactly those orders."""

    TITLE = "Deleverage"
    BUTTONS = (("preview", "Dry run", "default"), ("send", "Send...", "warning"), ("cancel", "Cancel", "primary"))
    AUTO_FOCUS = "#preview"

    def __init__(self, account: str, strategy: str = "risk", method: str = "market") -> None:
        super().__init__(account)
        self.strategy, self.method = strategy, method
        self.plan: dict[str, Any] | None = None
        self.plan_params: dict[str, Any] | None = None

    def fields(self) -> ComposeResult:
        yield row(
            "strategy",
            Select([(s, s) for s in STRATEGIES], value=self.strategy, allow_blank=False, id="strategy", compact=True),
        )
        yield row(
            "method", Select([(m, m) for m in METHODS], value=self.method, allow_blank=False, id="method", compact=True)
        )
        yield row("target ratio", number_input("target", placeholder="default: warning + buffer"))
        yield row("or fraction", number_input("fraction", placeholder="0-1 of the exposure"))
        with VerticalScroll(classes="plan-box"):
            yield Static("[dim]dry run pending[/]", id="plan")

    def on_mount(self) -> None:
        self.query_one("#send", Button).disabled = True
        self.preview()

    def params(self) -> dict[str, Any] | None:
        out: dict[str, Any] = {
            "strategy": self.query_one("#strategy", Select).value,
            "method": self.query_one("#method", Select).value,
        }
        for key, field_id in (("target_ratio", "target"), ("fraction", "fraction")):
            text = self.value(field_id)
            if text:
                try:
                    out[key] = float(text)
                except ValueError:
                    self.say(f"{key} must be a number, got {text!r}")
                    return None
        return out

    def on_input_changed(self, event: Input.Changed) -> None:
        self._stale()

    def on_select_changed(self, event: Select.Changed) -> None:
        self._stale()

    def _stale(self) -> None:
        if self.plan is not None and self.params() != self.plan_params:
            self.plan = None
            self.query_one("#send", Button).disabled = True
            self.say("parameters changed: dry run again to see the plan")

    def show_plan(self, plan: dict[str, Any] | None) -> None:
        self.plan = plan if plan and plan.get("orders") else None
        self.query_one("#plan", Static).update(plan_markup(plan) if plan else "[dim]no plan[/]")
        self.query_one("#send", Button).disabled = self.plan is None

    @work(exclusive=True, group="deleverage")
    async def preview(self) -> None:
        params = self.params()
        if params is None:
            return
        result = await self.capguard.send("deleverage", account=self.account, dry_run=True, quiet=True, **params)
        if not result.ok:
            self.say(result.message)
            self.show_plan(None)
            return
        self.plan_params = params
        self.show_plan(result.plan)
        self.say(result.message, ok=True)

    @work(exclusive=True, group="deleverage")
    async def send_plan(self) -> None:
        params = self.params()
        if params is None or self.plan is None:
            return
        orders = self.plan["orders"]
        body = f"Send {len(orders)} reduce-only orders for {escape(str(self.account))}?\n\n" + plan_markup(
            self.plan, brief=True
        )
        if not await self.confirm("Send deleverage", body, "Send"):
            return
        confirm_plan = [{"symbol": o["symbol"], "qty": o["qty"]} for o in orders]
        sent = dict(params)
        if "target_ratio" not in sent and "fraction" not in sent and self.plan.get("target") is not None:
            # Send the target that was shown: the default one moves with the dynamic thresholds.
            sent["target_ratio"] = self.plan["target"]
        result = await self.send("deleverage", confirm_plan=confirm_plan, **sent)
        if not result.ok and result.plan is not None:
            # The market moved between the dry run and the send: show the new plan to confirm again.
            self.plan_params = params
            self.show_plan(result.plan)
            self.say(f"{result.message} ({plan_diff(orders, result.plan.get('orders') or [])})")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "preview":
            self.preview()
        elif event.button.id == "send":
            self.send_plan()
        else:
            super().on_button_pressed(event)


class LiquidateScreen(CommandModal):
    """Type the account id to arm the button; Cancel has the focus; Escape cancels."""

    TITLE = "Liquidate"
    BUTTONS = (("cancel", "Cancel", "primary"), ("liquidate", "Liquidate", "error"))

    def __init__(self, account: str, mode: str = "orderly") -> None:
        super().__init__(account)
        self.mode = mode

    def fields(self) -> ComposeResult:
        yield Static(
            f"Closes every position of [b]{escape(str(self.account))}[/] with reduce-only orders and "
            "HALTS the account until a risk officer resets it.\nType the account id to confirm.",
            classes="dialog-body",
        )
        yield row(
            "mode",
            Select(
                [("orderly", "orderly"), ("immediate", "immediate")],
                value=self.mode,
                allow_blank=False,
                id="mode",
                compact=True,
            ),
        )
        yield row("account id", text_input("typed", placeholder=str(self.account)))

    def on_mount(self) -> None:
        self.query_one("#liquidate", Button).disabled = True

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_one("#liquidate", Button).disabled = event.value.strip() != self.account

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.value.strip() == self.account:
            await self._liquidate()

    async def _liquidate(self) -> None:
        await self.send("liquidate", confirm=self.value("typed"), mode=self.query_one("#mode", Select).value)

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "liquidate":
            await self._liquidate()
        else:
            super().on_button_pressed(event)
