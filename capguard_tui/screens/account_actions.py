"""The override keys that act on the selected account, shared by the overview and the account
detail. They are ordinary screen bindings (never App priority bindings, which would also fire
inside dialogs), debounced, and gated by the operator's role through `check_action`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual import events

from capguard_tui import keys
from capguard_tui.screens.forms import (
    BreakerScreen,
    HoldScreen,
    KillSwitchScreen,
    ResetScreen,
    ScheduleScreen,
    ThresholdsScreen,
    held_text,
    threshold_values,
)
from capguard_tui.screens.lookahead import ScenarioGridScreen, WhatIfScreen
from capguard_tui.screens.orders import DeleverageScreen, LiquidateScreen

if TYPE_CHECKING:
    from capguard_tui.app import CapguardApp


class AccountActions:
    """Mixin for a Screen that knows which account is selected."""

    app: Any

    @property
    def capguard(self) -> CapguardApp:
        return self.app  # type: ignore[no-any-return]

    def current_account(self) -> str | None:
        raise NotImplementedError

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        app = self.capguard
        return keys.check(action, app.operator.role, app.readonly)

    def on_key(self, event: events.Key) -> None:
        """A disabled override key says why instead of doing nothing silently."""
        app = self.capguard
        action = app.key_actions.get(event.key)
        if action is None or action.scope not in ("account", "alerts"):
            return
        why = keys.refusal(action, app.operator.role, app.readonly)
        if why and why != "read-only console":
            event.stop()
            app.notify(f"{action.description}: {why}", severity="warning", timeout=4)

    def _target(self, action_id: str, needs_account: bool = True) -> tuple[str | None, int | None] | None:
        """(account, snapshot index) for a key press, or None when debounced or nothing selected."""
        app = self.capguard
        if not app.debounce(action_id):
            return None
        account = self.current_account()
        if needs_account and account is None:
            app.notify("select an account first", severity="warning")
            return None
        snap = app.state.snapshot
        index = app.account_index(account) if account is not None else None
        if needs_account and (snap is None or index is None):
            return None
        return account, index

    def action_deleverage(self) -> None:
        if (t := self._target("deleverage")) is None:
            return
        d = self.capguard.defaults
        self.capguard.push_screen(DeleverageScreen(t[0], d.get("strategy", "risk"), d.get("method", "market")))

    def action_liquidate(self) -> None:
        if (t := self._target("liquidate")) is None:
            return
        self.capguard.push_screen(LiquidateScreen(t[0], self.capguard.defaults.get("mode", "orderly")))

    def action_thresholds(self) -> None:
        if (t := self._target("thresholds")) is None:
            return
        snap = self.capguard.state.snapshot
        self.capguard.push_screen(ThresholdsScreen(t[0], threshold_values(snap, t[1])))

    def action_hold(self) -> None:
        if (t := self._target("hold")) is None:
            return
        self.capguard.push_screen(HoldScreen(t[0], held_text(self.capguard.state.snapshot, t[1])))

    def action_reset(self) -> None:
        if (t := self._target("reset")) is None:
            return
        self.capguard.push_screen(ResetScreen(t[0]))

    def action_schedule(self) -> None:
        if (t := self._target("schedule")) is None:
            return
        try:
            scheduled = self.capguard.view.account_detail(t[0]).get("scheduled", [])
        except Exception:  # the detail is a nicety here; scheduling still works without the list
            scheduled = []
        self.capguard.push_screen(ScheduleScreen(t[0], scheduled))

    def action_kill_switch(self) -> None:
        if self._target("kill_switch", needs_account=False) is None:
            return
        summary = self.capguard.state.snapshot.summary if self.capguard.state.snapshot else {}
        self.capguard.push_screen(KillSwitchScreen(bool(summary.get("kill_switch"))))

    def action_release_breaker(self) -> None:
        if self._target("release_breaker", needs_account=False) is None:
            return
        summary = self.capguard.state.snapshot.summary if self.capguard.state.snapshot else {}
        self.capguard.push_screen(BreakerScreen(bool(summary.get("circuit_breaker"))))

    def action_scenario_grid(self) -> None:
        if (t := self._target("scenario_grid")) is None:
            return
        self.capguard.push_screen(ScenarioGridScreen(t[0]))

    def action_what_if(self) -> None:
        if (t := self._target("what_if")) is None:
            return
        try:  # the account's positions, to offer its symbols and default to the reducing side
            positions = self.capguard.view.account_detail(t[0]).get("positions") or []
        except Exception as exc:
            self.capguard.view_error("what-if", exc)
            return
        self.capguard.push_screen(WhatIfScreen(t[0], positions))

    async def action_acknowledge(self) -> None:
        app = self.capguard
        if not app.debounce("acknowledge"):
            return
        account = self.current_account()
        open_ = app.state.open_alerts(account) or app.state.open_alerts()
        if not open_:
            app.notify("no open alert")
            return
        await app.acknowledge(open_[0])
