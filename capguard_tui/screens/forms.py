"""The override dialogs other than orders (orders.py): thresholds, hold/resume, reset, schedule,
kill switch and circuit breaker. Each sends the engine command and shows the engine's answer.
"""

from __future__ import annotations

import re
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.markup import escape
from textual.widgets import Button, Label, Select, Static

from capguard_tui import fmt
from capguard_tui.screens.confirm import CommandModal, number_input, text_input

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float | None:
    """'90' or '90s' -> 90; '15m' -> 900; '2h' -> 7200. None when not understood."""
    m = _DURATION.match(text)
    if not m:
        return None
    return float(m.group(1)) * _UNIT[m.group(2).lower()]


def row(label: str, widget: Any) -> Horizontal:
    return Horizontal(Label(label, classes="field-label"), widget, classes="field")


class ThresholdsScreen(CommandModal):
    """Only the fields changed are sent; the engine decides tighten vs loosen and who may."""

    TITLE = "Thresholds"
    BUTTONS = (("save", "Save", "warning"), ("cancel", "Cancel", "primary"))
    AUTO_FOCUS = "#warning"

    def __init__(self, account: str, current: dict[str, float]) -> None:
        super().__init__(account)
        self.shown = {k: f"{v:.4g}" for k, v in current.items()}

    def fields(self) -> ComposeResult:
        yield Static(
            "Effective now: "
            + " / ".join(f"{k} {v}" for k, v in self.shown.items())
            + "\n[dim]Higher is tighter. Traders may only tighten; loosening needs the risk role.[/]",
            classes="dialog-body",
        )
        for key in ("warning", "critical", "liquidation"):
            yield row(key, number_input(key, self.shown[key]))
        yield row("reason", text_input("reason", placeholder="why (journaled)"))

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id != "save":
            super().on_button_pressed(event)
            return
        params: dict[str, Any] = {}
        for key in ("warning", "critical", "liquidation"):
            text = self.value(key)
            if text != self.shown[key]:
                try:
                    params[key] = float(text)
                except ValueError:
                    self.say(f"{key} must be a number, got {text!r}")
                    return
        if not params:
            self.say("nothing changed")
            return
        await self.send("set_thresholds", reason=self.value("reason"), **params)


class HoldScreen(CommandModal):
    TITLE = "Hold automatic action"
    BUTTONS = (("hold", "Hold", "warning"), ("resume", "Resume", "default"), ("cancel", "Cancel", "primary"))
    AUTO_FOCUS = "#reason"  # the field to fill; nothing is sent before the Hold or Resume button

    def __init__(self, account: str, held_until: str | None) -> None:
        super().__init__(account)
        self.held_until = held_until

    def fields(self) -> ComposeResult:
        state = f"held until {self.held_until}" if self.held_until else "not held: automatic protection is on"
        yield Static(f"{escape(str(self.account))}: {escape(state)}", classes="dialog-body")
        yield row("duration", text_input("duration", "15m", "90s, 15m, 2h (max 24h)"))
        yield row("reason", text_input("reason", placeholder="why (journaled)"))

    def on_mount(self) -> None:
        self.query_one("#resume", Button).disabled = self.held_until is None

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "hold":
            seconds = parse_duration(self.value("duration"))
            if seconds is None:
                self.say(f"duration not understood: {self.value('duration')!r} (e.g. 90s, 15m, 2h)")
                return
            await self.send("hold", duration=seconds, reason=self.value("reason"))
        elif event.button.id == "resume":
            await self.send("resume", reason=self.value("reason"))
        else:
            super().on_button_pressed(event)


class ResetScreen(CommandModal):
    TITLE = "Reset"
    BUTTONS = (("cancel", "Cancel", "primary"), ("reset", "Reset...", "warning"))
    AUTO_FOCUS = "#reason"  # the field to fill; nothing is sent before a button (and a y/n)

    def fields(self) -> ComposeResult:
        yield Static(
            f"Re-enable trading on the halted account [b]{escape(str(self.account))}[/].\n"
            "Review the cause first; the reason is journaled.",
            classes="dialog-body",
        )
        yield row("reason", text_input("reason", placeholder="required"))

    @work(exclusive=True)
    async def _reset(self) -> None:
        if await self.confirm("Reset", f"Reset {escape(str(self.account))} and re-enable trading?", "Reset"):
            await self.send("reset", reason=self.value("reason"))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "reset":
            self._reset()
        else:
            super().on_button_pressed(event)


class ScheduleScreen(CommandModal):
    TITLE = "Schedule"
    BUTTONS = (("schedule", "Schedule...", "warning"), ("cancel", "Close", "primary"))
    AUTO_FOCUS = "#when"

    def __init__(self, account: str, scheduled: list[dict[str, Any]]) -> None:
        super().__init__(account)
        self.scheduled = scheduled

    def fields(self) -> ComposeResult:
        yield row(
            "action",
            Select(
                [("deleverage", "deleverage"), ("liquidate", "liquidate")],
                value="deleverage",
                allow_blank=False,
                id="action",
                compact=True,
            ),
        )
        yield row("in / at", text_input("when", "10m", "in: 90s, 15m, 2h; or at: ISO-8601 UTC"))
        yield Label("Scheduled for this account:", classes="field-label")
        if not self.scheduled:
            yield Static("[dim]nothing scheduled[/]")
        for item in self.scheduled:
            with Horizontal(classes="field"):
                yield Static(f"{item['schedule_id']}  {item['action']}  at {item['at']}", classes="schedule-item")
                yield Button(f"Cancel {item['schedule_id']}", id=f"unschedule-{item['schedule_id']}", compact=True)

    @work(exclusive=True)
    async def _schedule(self) -> None:
        action = self.query_one("#action", Select).value
        when = self.value("when")
        params: dict[str, Any] = {"action": action}
        seconds = parse_duration(when)
        if seconds is not None:
            params["in_seconds"] = seconds
        elif when:
            params["at"] = when
        else:
            self.say("give a delay (15m) or a time (ISO-8601)")
            return
        if action == "liquidate":
            body = f"Schedule the LIQUIDATION of {escape(str(self.account))} ({escape(when)})?"
            if not await self.confirm("Schedule liquidation", body, "Schedule"):
                return
            params["params"] = {"confirm": self.account}
        await self.send("schedule", **params)

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        bid = event.button.id or ""
        if bid == "schedule":
            self._schedule()
        elif bid.startswith("unschedule-"):
            await self.send("cancel_schedule", schedule_id=bid.removeprefix("unschedule-"))
        else:
            super().on_button_pressed(event)


class KillSwitchScreen(CommandModal):
    TITLE = "Kill switch"
    BUTTONS = (("cancel", "Cancel", "primary"), ("toggle", "Engage...", "error"))
    AUTO_FOCUS = "#reason"  # the field to fill; nothing is sent before a button (and a y/n)

    def __init__(self, engaged: bool) -> None:
        super().__init__(None)
        self.engaged = engaged

    def fields(self) -> ComposeResult:
        text = (
            "The kill switch is [b]ENGAGED[/]: every account is REDUCING."
            if self.engaged
            else "Engaging puts every account in REDUCING and cancels working exposure-increasing orders."
        )
        yield Static(text, classes="dialog-body")
        yield row("reason", text_input("reason", placeholder="required"))

    def on_mount(self) -> None:
        self.query_one("#toggle", Button).label = "Release..." if self.engaged else "Engage..."

    @work(exclusive=True)
    async def _toggle(self) -> None:
        verb = "Release" if self.engaged else "Engage"
        if await self.confirm(f"{verb} the kill switch", f"{verb} the book-wide kill switch?", verb):
            await self.send("kill_switch", engage=not self.engaged, reason=self.value("reason"))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "toggle":
            self._toggle()
        else:
            super().on_button_pressed(event)


class BreakerScreen(CommandModal):
    TITLE = "Circuit breaker"
    BUTTONS = (("cancel", "Cancel", "primary"), ("release", "Release...", "warning"))
    AUTO_FOCUS = "#reason"  # the field to fill; nothing is sent before a button (and a y/n)

    def __init__(self, tripped: bool) -> None:
        super().__init__(None)
        self.tripped = tripped

    def fields(self) -> ComposeResult:
        text = (
            "The circuit breaker is [b]TRIPPED[/]: every account is REDUCING."
            if self.tripped
            else "The circuit breaker is not tripped."
        )
        yield Static(text, classes="dialog-body")
        yield row("reason", text_input("reason", placeholder="required"))

    @work(exclusive=True)
    async def _release(self) -> None:
        if await self.confirm("Release the circuit breaker", "Release the circuit breaker?", "Release"):
            await self.send("release_breaker", reason=self.value("reason"))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "release":
            self._release()
        else:
            super().on_button_pressed(event)


def threshold_values(snapshot: Any, index: int) -> dict[str, float]:
    c = snapshot.columns
    return {k: float(c[k][index]) for k in ("warning", "critical", "liquidation")}


def held_text(snapshot: Any, index: int) -> str | None:
    held = float(snapshot.columns["held_until"][index])
    return fmt.hms(held) + " UTC" if held > snapshot.time else None
