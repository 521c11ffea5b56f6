"""One account in depth: positions, orders, the ratio chart, thresholds and their factors,
the latest protective action's flow, the cheapest step back, schedules and the timeline.
Everything comes from `guard.account_detail(id)`, fetched at each refresh."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import Footer, Static

from capguard_tui import keys
from capguard_tui.screens.account_actions import AccountActions
from capguard_tui.state import ConsoleState
from capguard_tui.widgets import sections
from capguard_tui.widgets.chart import ratio_chart


class AccountDetailScreen(AccountActions, Screen[None]):
    BINDINGS = keys.bindings("account", "screen", "alerts")

    def __init__(self, account_id: str) -> None:
        super().__init__()
        self.account_id = account_id
        self.detail: dict[str, Any] | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="detail-header", classes="section")
        with Horizontal(id="detail-body"):
            with VerticalScroll(id="detail-left"):
                yield Static("", id="positions", classes="section")
                yield Static("", id="orders", classes="section")
                yield Static("", id="chart", classes="section")
                yield Static("", id="flow", classes="section")
            with VerticalScroll(id="detail-right"), Vertical():
                yield Static("", id="thresholds", classes="section")
                yield Static("", id="cheapest", classes="section")
                yield Static("", id="risk", classes="section")
                yield Static("", id="scheduled", classes="section")
                yield Static("", id="timeline", classes="section")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.refresh_data(self.capguard.state)

    def current_account(self) -> str | None:
        return self.account_id

    def refresh_data(self, state: ConsoleState) -> None:
        try:
            d = self.capguard.view.account_detail(self.account_id)
        except Exception as exc:  # e.g. the account left the book: say so, keep the screen
            self.query_one("#detail-header", Static).update(f"[b]{escape(self.account_id)}[/]: {escape(str(exc))}")
            return
        self.detail = d
        self.query_one("#detail-header", Static).update(sections.header(d))
        self.query_one("#positions", Static).update(
            sections.positions(d, self.query_one("#detail-left").size.width - 2)
        )
        self.query_one("#orders", Static).update(sections.orders(d))
        chart_w = self.query_one("#detail-left").size.width - 2
        result = (d.get("thresholds") or {}).get("result") or {}
        self.query_one("#chart", Static).update(
            "[b]Margin ratio[/] [dim](eq/MM, thresholds dashed)[/]\n"
            + ratio_chart(d.get("history") or [], result, chart_w, 8)
        )
        self.query_one("#flow", Static).update(sections.flow(d))
        self.query_one("#thresholds", Static).update(sections.thresholds(d))
        self.query_one("#cheapest", Static).update(sections.cheapest(d))
        self.query_one("#risk", Static).update(sections.risk(d))
        self.query_one("#scheduled", Static).update(sections.scheduled(d))
        self.query_one("#timeline", Static).update(sections.timeline(d))

    def action_back(self) -> None:
        self.app.pop_screen()
