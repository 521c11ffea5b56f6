"""Alerts (open and past, acknowledge with `a`) and the actions history (the journal, filtered
by account and kind)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import BindingType
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import Footer, Input, OptionList, Static
from textual.widgets.option_list import Option

from capguard_tui import fmt, keys
from capguard_tui.screens.confirm import QuietInput
from capguard_tui.state import Alert, ConsoleState
from capguard_tui.widgets.panels import SEVERITY_LEVEL, level_text


class ListScreen(Screen[None]):
    """A titled list that redraws only when its content changed, keeping the highlight."""

    BINDINGS: ClassVar[list[BindingType]] = [
        *keys.bindings("screen"),
        *(b for b in keys.bindings("overview") if b.id == "filter"),
    ]

    def compose(self) -> ComposeResult:
        yield Static("", id="list-title")
        yield QuietInput(placeholder="filter: text, or kind:order / account:NAME", id="list-filter", compact=True)
        yield OptionList(id="list", compact=True)
        yield Static("", id="list-status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._drawn: object = None
        self.query_one("#list-filter", Input).display = False
        self.query_one(OptionList).focus()
        self.refresh_data(self.app.state)  # type: ignore[attr-defined]

    def refresh_data(self, state: ConsoleState) -> None:
        raise NotImplementedError

    def set_options(self, key: object, options: list[Option]) -> None:
        if key == self._drawn:
            return
        self._drawn = key
        olist = self.query_one(OptionList)
        keep = olist.highlighted_option.id if olist.highlighted_option is not None else None
        olist.set_options(options)
        ids = [o.id for o in options]
        olist.highlighted = ids.index(keep) if keep in ids else (0 if options else None)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        app = self.app
        return keys.check(action, app.operator.role, app.readonly)  # type: ignore[attr-defined]

    def action_filter(self) -> None:
        box = self.query_one("#list-filter", Input)
        box.display = True
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self._drawn = None
        self.refresh_data(self.app.state)  # type: ignore[attr-defined]

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.input.display = bool(event.value)
        self.query_one(OptionList).focus()

    @property
    def query_text(self) -> str:
        return self.query_one("#list-filter", Input).value.strip().lower()

    def action_back(self) -> None:
        box = self.query_one("#list-filter", Input)
        if box.value or box.display:
            box.value, box.display = "", False
            self.query_one(OptionList).focus()
            return
        self.app.switch_mode("overview")


def alert_prompt(a: Alert) -> str:
    sev = SEVERITY_LEVEL.get(a.severity, 0)
    state = (
        "[dim]ack " + escape(a.acknowledged_by) + "[/]"
        if a.acknowledged_by
        else ("[b]OPEN[/]" if a.needs_ack else "[dim]info[/]")
    )
    who = escape(a.account or "book")
    severity = level_text(sev, a.severity.upper()[:9].ljust(9))
    return f"{fmt.iso_hms(a.ts)} {severity} {state:<6} {who:<17} {escape(a.message)}"


class AlertsScreen(ListScreen):
    BINDINGS: ClassVar[list[BindingType]] = [*ListScreen.BINDINGS, *keys.bindings("alerts")]

    def refresh_data(self, state: ConsoleState) -> None:
        q = self.query_text
        items = [a for a in state.alerts if not q or q in f"{a.account} {a.severity} {a.category} {a.message}".lower()]
        open_n = sum(a.needs_ack for a in state.alerts)
        self.query_one("#list-title", Static).update(
            f"[b]Alerts[/]  {open_n} open, {len(state.alerts)} in all  [dim]a acknowledge  / filter  Esc back[/]"
        )
        key = (state.changed, q, len(items))
        self._items = items
        self.set_options(key, [Option(alert_prompt(a), id=f"a{i}-{a.ts}-{a.account}") for i, a in enumerate(items)])

    async def action_acknowledge(self) -> None:
        app = self.app
        if not app.debounce("acknowledge"):  # type: ignore[attr-defined]
            return
        olist = self.query_one(OptionList)
        if olist.highlighted is None or olist.highlighted >= len(self._items):
            return
        alert = self._items[olist.highlighted]
        if not alert.needs_ack:
            app.notify("already acknowledged" if alert.acknowledged_by else "informational: nothing to acknowledge")
            return
        await app.acknowledge(alert)  # type: ignore[attr-defined]
        self._drawn = None
        self.refresh_data(app.state)  # type: ignore[attr-defined]


class HistoryScreen(ListScreen):
    """The journal's recent actions (decisions, orders, outcomes, operator commands, alerts,
    transitions), newest first."""

    LIMIT = 500

    def refresh_data(self, state: ConsoleState) -> None:
        q = self.query_text
        key = (state.changed, q)
        if key == self._drawn:
            return
        try:
            records = self.app.view.recent_actions(self.LIMIT)  # type: ignore[attr-defined]
        except Exception as exc:
            self.query_one("#list-status", Static).update(f"journal unavailable: {escape(str(exc))}")
            return
        terms = q.split()
        kinds = [t.removeprefix("kind:") for t in terms if t.startswith("kind:")]
        accounts = [t.removeprefix("account:") for t in terms if t.startswith("account:")]
        words = [t for t in terms if not t.startswith(("kind:", "account:"))]
        shown = []
        for r in records:
            text = fmt.record_text(r)
            if kinds and not any(str(r.get("kind", "")).startswith(k) for k in kinds):
                continue
            if accounts and not any(a in str(r.get("account") or "").lower() for a in accounts):
                continue
            if words and not all(w in f"{r.get('account')} {r.get('kind')} {text}".lower() for w in words):
                continue
            shown.append(
                Option(
                    f"{fmt.iso_hms(r.get('ts'))} [dim]#{r.get('seq')}[/] {escape(str(r.get('kind'))):<10} "
                    f"{escape(str(r.get('account') or 'book')):<17} {escape(text)}",
                    id=f"r{r.get('seq')}",
                )
            )
        self.query_one("#list-title", Static).update(
            f"[b]Actions and history[/]  {len(shown)} of the last {len(records)} journal records  "
            "[dim]/ filter (kind:order account:NAME text)  Esc back[/]"
        )
        self.set_options(key, shown)
