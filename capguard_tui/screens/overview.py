"""Home: every account in one live table, with the selected account's gauges, the book, open
alerts and the action log beside it (below it, in one compact strip, on a narrow terminal)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from capguard_tui import keys
from capguard_tui.screens.account_actions import AccountActions
from capguard_tui.screens.confirm import QuietInput
from capguard_tui.state import ConsoleState
from capguard_tui.widgets import panels
from capguard_tui.widgets.accounts import AccountsTable

FILTER_HINT = "filter: text  level:warning  desk:basis  strategy:trend   (Enter keep, Esc clear)"


def top_bar(state: ConsoleState, table: AccountsTable, who: str, badges: str) -> str:
    snap = state.snapshot
    model = table.model
    shown = len(model.order)
    total = len(snap) if snap is not None else 0
    arrow = "v" if model.column.descending != model.reverse else "^"
    filt = model.filter.describe()
    parts = [
        "[b]capguard[/]",
        f"[dim]{escape(who)}[/]",
        f"{shown}/{total} accounts",
        f"sort {escape(model.column.title)}{arrow}",
    ]
    if filt:
        parts.append(f"filter {escape(filt)}")
    if badges:
        parts.append(badges)
    return "  ".join(parts)


class OverviewScreen(AccountActions, Screen[None]):
    BINDINGS = keys.bindings("overview", "account", "alerts")

    def compose(self) -> ComposeResult:
        yield Static("", id="topbar")
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield AccountsTable(id="accounts")
                yield QuietInput(placeholder=FILTER_HINT, id="filter", compact=True)
                yield Static("", id="strip")
            with Vertical(id="side"):
                yield Static("", id="gauges")
                yield Static("", id="book")
                yield Static("", id="alerts-panel")
                yield Static("", id="log-panel")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self.query_one(AccountsTable).focus()
        self._drawn_changes = -1
        self._shown: dict[str, str] = {}
        if self.capguard.state.snapshot is not None:
            self.refresh_data(self.capguard.state)

    @property
    def table(self) -> AccountsTable:
        return self.query_one(AccountsTable)

    def current_account(self) -> str | None:
        return self.table.model.selected

    # -- refresh -----------------------------------------------------------------------
    def refresh_data(self, state: ConsoleState) -> None:
        if state.snapshot is None:
            return
        self.table.update_snapshot(state.snapshot)
        self._draw_panels(state)

    def _show(self, selector: str, markup: str) -> None:
        """Update a fixed-size panel only when its text changed (no relayout)."""
        if self._shown.get(selector) != markup:
            self._shown[selector] = markup
            self.query_one(selector, Static).update(markup, layout=False)

    def _draw_panels(self, state: ConsoleState) -> None:
        snap = state.snapshot
        app = self.capguard
        self._show("#topbar", top_bar(state, self.table, app.who, app.badges()))
        index = self.table.model.selected_index
        wide = self.query_one("#side").display
        if wide:
            width = max(self.query_one("#side").size.width - 2, 20)
            self._show("#gauges", panels.gauges(snap, index, width))
            self._show("#book", panels.book(snap.summary if snap else {}, width))
            if state.changed != self._drawn_changes:
                self._drawn_changes = state.changed
                open_ = state.open_alerts()
                rows = max(self.query_one("#alerts-panel").size.height - 1, 3)
                self._show("#alerts-panel", panels.alerts(open_, rows, width))
                rows = max(self.query_one("#log-panel").size.height - 1, 3)
                self._show("#log-panel", panels.action_log(list(state.log)[: rows + 1], rows, width))
        else:
            width = max(self.size.width - 2, 40)
            # The newest line of the action log: alerts, actions and command outcomes alike.
            last = panels.log_text(state.log[0], width) if state.log else "[dim]nothing yet[/]"
            self._show(
                "#strip",
                "\n".join(
                    [panels.gauge_line(snap, index, width), panels.book_line(snap.summary if snap else {}), last]
                ),
            )
            self._drawn_changes = -1

    def on_resize(self) -> None:
        self._drawn_changes = -1

    def on_accounts_table_selected(self, message: AccountsTable.Selected) -> None:
        if self.capguard.state.snapshot is not None:
            self._draw_panels(self.capguard.state)

    def on_accounts_table_opened(self, message: AccountsTable.Opened) -> None:
        self.capguard.open_account(message.account_id)

    # -- keys --------------------------------------------------------------------------
    def action_open(self) -> None:
        if self.current_account():
            self.capguard.open_account(self.current_account())

    def action_sort(self) -> None:
        self.table.model.cycle_sort()
        self._redraw()

    def action_sort_reverse(self) -> None:
        self.table.model.invert()
        self._redraw()

    def _redraw(self) -> None:
        self.table._after_change()
        self._draw_panels(self.capguard.state)

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.table.model.set_filter(event.value)
            self._redraw()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            event.input.display = bool(event.value)
            self.table.focus()

    def action_back(self) -> None:
        box = self.query_one("#filter", Input)
        if box.display or box.value:
            box.value = ""
            box.display = False
            self.table.model.set_filter("")
            self.table.focus()
            self._redraw()

    def key_escape(self) -> None:
        self.action_back()
