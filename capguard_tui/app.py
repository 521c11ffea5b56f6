"""The capguard console: a Textual app over a GuardView.

`run(loaded, args)` builds the embedded Guard, runs its loop as a task inside the app, and
stops it cleanly on quit. The app only shows what the guard knows and sends operator commands
through `GuardView.command`; it computes nothing of its own.

Quiet over SSH: no clock, spinner, animation or blinking cursor; one refresh at
`console.refresh_hz`, each scheduled when the previous one finished, none while a dialog is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Iterable
from functools import partial
from typing import Any, ClassVar

from textual.app import App, SystemCommand
from textual.binding import BindingType
from textual.screen import ModalScreen, Screen

from capguard_tui import fmt, keys
from capguard_tui.screens.account_actions import AccountActions
from capguard_tui.screens.detail import AccountDetailScreen
from capguard_tui.screens.help import HelpScreen, help_text
from capguard_tui.screens.insight import AnalyticsScreen, HeatmapScreen
from capguard_tui.screens.lists import AlertsScreen, HistoryScreen
from capguard_tui.screens.overview import OverviewScreen
from capguard_tui.screens.stress import StressScreen
from capguard_tui.state import Alert, ConsoleState
from capguard_tui.theming import RISK_DEFAULTS, load_themes, stylesheet
from engine.operators import Operator
from engine.view import AccountsSnapshot, CommandResult, GuardView

log = logging.getLogger("capguard.console")

EX_OK = 0
EX_CONFIG = 78
JOURNAL_SEED = 300  # journal records read at start to fill the log and past alerts


class CapguardApp(App[int]):
    TITLE = "capguard"
    CSS_PATH = stylesheet()
    MODES: ClassVar[dict[str, Any]] = {
        "overview": OverviewScreen,
        "alerts": AlertsScreen,
        "history": HistoryScreen,
        "heatmap": HeatmapScreen,
        "analytics": AnalyticsScreen,
    }
    DEFAULT_MODE = "overview"
    BINDINGS: ClassVar[list[BindingType]] = keys.bindings("app")
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]]] = [(0, "-narrow"), (120, "-wide")]

    def __init__(
        self,
        view: GuardView,
        operator: Operator,
        *,
        guard: Any = None,
        run_guard: bool = True,
        refresh_hz: float = 4.0,
        theme: str = "dark",
        readonly: bool = False,
        keymap: dict[str, str] | None = None,
        defaults: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.animation_level = "none"
        self.view = view
        self.guard = guard  # the embedded Guard when there is one (feed pause, loop ownership)
        self.operator = operator
        self.readonly = readonly
        self.run_guard = run_guard
        self.refresh_interval = 1.0 / refresh_hz
        self.keymap_overrides = keys.keymap(keymap or {})
        self.key_actions = keys.by_key(self.keymap_overrides)
        self.defaults = defaults or {}
        self.state = ConsoleState()
        self.refreshes = 0
        self._themes = load_themes()
        self._wanted_theme = theme
        self._guard_task: asyncio.Task[None] | None = None
        self._guard_stopped = False
        self._presses: dict[str, float] = {}
        self._index: tuple[tuple[str, ...] | None, dict[str, int]] = (None, {})
        self._subscription = view.subscribe(maxsize=2000)

    # ------------------------------------------------------------------ lifecycle
    def get_theme_variable_defaults(self) -> dict[str, str]:
        return dict(RISK_DEFAULTS)

    def on_load(self) -> None:
        for theme in self._themes.values():
            self.register_theme(theme)
        if self._wanted_theme not in self._themes:
            log.warning("unknown theme %r, using dark", self._wanted_theme)
            self._wanted_theme = "dark"
        self.theme = self._wanted_theme
        if self.keymap_overrides:
            self.set_keymap(self.keymap_overrides)

    def on_mount(self) -> None:
        try:
            self.state.load_journal(self.view.recent_actions(JOURNAL_SEED))
        except Exception as exc:  # a journal problem must not keep the console from showing the book
            self.notify(f"journal unavailable: {exc}", severity="error")
        if self.guard is not None and self.run_guard:
            loop = asyncio.get_running_loop()
            self._guard_task = loop.create_task(self.guard.run())
            self._guard_task.add_done_callback(self._guard_done)
            # The terminal went away (SSH dropped, tmux killed): exit the same clean way as `q`.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGHUP, self.exit)
        self.refresh_now()
        self.set_timer(self.refresh_interval, self._tick)

    def _guard_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and not self._guard_stopped:
            log.error("guard loop stopped", exc_info=task.exception())
            self.notify(f"the guard loop stopped: {task.exception()}", severity="error", timeout=30)

    async def stop_guard(self) -> None:
        """Stop the embedded guard's loop (idempotent); in-flight actions finish or are journaled."""
        if self._guard_stopped:
            return
        self._guard_stopped = True
        self._subscription.close()
        if self.guard is not None and self._guard_task is not None:
            await self.guard.stop()
            await asyncio.gather(self._guard_task, return_exceptions=True)

    async def on_unmount(self) -> None:
        await self.stop_guard()
        if hasattr(self.view, "aclose"):
            await self.view.aclose()

    async def action_quit(self) -> None:
        await self.stop_guard()
        self.exit(EX_OK)

    # ------------------------------------------------------------------ refresh
    def _tick(self) -> None:
        if not self._running or not self.screen_stack:  # shutting down
            return
        try:
            if not isinstance(self.screen, ModalScreen):
                self.refresh_now()
        except Exception:
            log.exception("refresh failed")
        # The next refresh is scheduled when this one has finished: they never overlap.
        self.set_timer(self.refresh_interval, self._tick)

    def refresh_now(self) -> None:
        snapshot: AccountsSnapshot = self.view.snapshot()
        self.state.snapshot = snapshot
        self.state.ingest(self._subscription.drain())
        self.refreshes += 1
        screen = self.screen
        if hasattr(screen, "refresh_data") and screen.is_mounted:
            screen.refresh_data(self.state)

    # ------------------------------------------------------------------ helpers
    @property
    def who(self) -> str:
        return f"{self.operator.name} ({self.operator.role.name.lower()})"

    def badges(self) -> str:
        summary = self.state.snapshot.summary if self.state.snapshot else {}
        out = []
        conn = summary.get("connection")
        if conn is not None and not conn.get("connected"):
            out.append(f"[bold $risk-text on $risk-liquidation] DISCONNECTED: numbers stale ({conn.get('age_s')}s) [/]")
        if summary.get("kill_switch"):
            out.append("[bold $risk-text on $risk-liquidation] KILL SWITCH [/]")
        if summary.get("circuit_breaker"):
            out.append("[bold $risk-text on $risk-liquidation] BREAKER [/]")
        if summary.get("version") == 0 and self._guard_task is not None:
            out.append("[reverse] GUARD STARTING [/]")  # e.g. reconciling a previous run's actions
        if summary.get("feed_paused"):
            out.append("[reverse] FEED PAUSED [/]")
        if self.readonly:
            out.append("[reverse] READ-ONLY [/]")
        return " ".join(out)

    def account_index(self, account: str | None) -> int | None:
        snap = self.state.snapshot
        if snap is None or account is None:
            return None
        if self._index[0] is not snap.ids:
            self._index = (snap.ids, {a: i for i, a in enumerate(snap.ids)})
        return self._index[1].get(account)

    def debounce(self, action_id: str) -> bool:
        """False for a repeat of the same key within DEBOUNCE_SECONDS (a key held or bounced)."""
        now = time.monotonic()
        last = self._presses.get(action_id)
        self._presses[action_id] = now
        return last is None or now - last >= keys.DEBOUNCE_SECONDS

    def engine_time(self) -> str:
        try:
            return str(self.view.status().get("time", ""))
        except Exception:
            return ""

    async def send(self, name: str, *, quiet: bool = False, **params: Any) -> CommandResult:
        """One operator command through the GuardView; the outcome goes to the action log."""
        if self.readonly and not params.get("dry_run"):
            result = CommandResult(False, "read-only console: no overrides")
        else:
            try:
                result = await self.view.command(name, self.operator, **params)
            except Exception as exc:  # a transport or engine failure is shown, never crashes the console
                log.exception("command %s failed", name)
                result = CommandResult(False, f"{name} failed: {exc}")
        if not quiet:
            verdict = "" if result.ok else "refused: "
            self.state.note(self.engine_time(), params.get("account"), f"{name}: {verdict}{result.message}", result.ok)
            if result.ok:  # a refusal is shown in its dialog; a success closes it, so say it here
                self.notify(result.message, title=name, timeout=4)
            if not isinstance(self.screen, ModalScreen):
                self.refresh_now()
        return result

    async def acknowledge(self, alert: Alert) -> None:
        """Acknowledge through the engine (journaled; its `ack` event marks the alert everywhere)."""
        if alert.alert_id is None:
            self.notify("this alert has no id in the journal: it cannot be acknowledged", severity="warning")
            return
        result = await self.send("acknowledge", alert_id=alert.alert_id, account=alert.account)
        if result.ok:
            alert.acknowledged_by = alert.acknowledged_by or self.operator.name

    async def ask(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One GuardView risk-analytics call (book_risk, stress, scenario_grid, what_if).

        The embedded guard answers on its own loop: its book is written by that loop and is
        not safe to read from a thread. A remote view's blocking HTTP call runs in a thread,
        so a slow link never freezes the console."""
        call = getattr(self.view, method)
        if self.guard is not None and self.view is self.guard:
            return call(*args, **kwargs)
        return await asyncio.to_thread(call, *args, **kwargs)

    def view_error(self, what: str, exc: BaseException) -> str:
        """A view's refusal or failure as one line, notified (never raised into the app)."""
        message = fmt.error_text(exc)
        log.info("%s: %s", what, message)
        self.notify(message, title=what, severity="error", timeout=8)
        return message

    def open_account(self, account_id: str) -> None:
        if self.current_mode != "overview":
            self.switch_mode("overview")
        self.push_screen(AccountDetailScreen(account_id))

    # ------------------------------------------------------------------ app keys
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return keys.check(action, self.operator.role, self.readonly)

    def action_switch(self, mode: str) -> None:
        self.switch_mode(mode)

    def action_help(self) -> None:
        text = help_text(self.operator.role, self.operator.name, self.readonly, self.keymap_overrides)
        self.push_screen(HelpScreen(text))

    def action_stress(self) -> None:
        if isinstance(self.screen, ModalScreen):  # not over another dialog
            return
        self.push_screen(StressScreen())

    def action_pause_feed(self) -> None:
        guard = self.guard
        if guard is None or not hasattr(guard, "feed"):
            self.notify("no embedded simulator to pause")
            return
        paused = not guard.feed.paused
        guard.feed.paused = paused
        # Freeze simulated time with the prices, so a paused demo does not turn every price STALE.
        clock = getattr(guard, "clock", None)
        if clock is not None and hasattr(clock, "pause"):
            clock.pause() if paused else clock.resume()
        self.state.note(self.engine_time(), None, f"simulator {'paused' if paused else 'resumed'}", True)
        self.refresh_now()

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        for name in self._themes:
            yield SystemCommand(f"Theme: {name}", f"Switch to the {name} theme", partial(setattr, self, "theme", name))
        yield SystemCommand("Keys", "Show every key (?)", self.action_help)
        for mode, title in (
            ("overview", "Overview"),
            ("alerts", "Alerts"),
            ("history", "Actions and history"),
            ("heatmap", "Risk heatmap"),
            ("analytics", "Analytics"),
        ):
            yield SystemCommand(f"Go: {title}", f"Show the {title.lower()} screen", partial(self.switch_mode, mode))
        target = screen if isinstance(screen, AccountActions) else None
        for k in keys.REGISTRY:
            if k.scope not in ("account", "app") or k.id in ("help", "quit"):
                continue
            why = keys.refusal(k, self.operator.role, self.readonly)
            if why == "read-only console":
                continue
            node = self if k.scope == "app" else target
            if node is None:
                continue
            if why:
                yield SystemCommand(
                    k.description, f"unavailable: {why}", partial(self.notify, f"{k.description}: {why}")
                )
            else:
                yield SystemCommand(
                    k.description,
                    f"key {keys.key_label(k, self.keymap_overrides)}",
                    partial(self.call_later, node.run_action, k.action),
                )
        yield SystemCommand("Quit", "Quit capguard", self.action_quit)


def build_app(loaded: Any, args: Any) -> CapguardApp:
    """The console over an embedded Guard built from the configuration and the command line."""
    from engine.config import ConfigWriter
    from engine.guard import Guard
    from engine.operators import local_operator

    config = loaded.config
    console = config.console
    keymap = keys.keymap(dict(getattr(console, "keys", None) or {}))
    theme = getattr(args, "theme", None) or console.theme
    if theme not in load_themes():
        raise ValueError(f"unknown theme {theme!r} (known: {', '.join(load_themes())})")
    guard = Guard.build(  # the configured [sources] when there are any (started by the guard's loop)
        config,
        scenario=getattr(args, "scenario", None),
        speed=getattr(args, "speed", None) or 1.0,
        journal_path=getattr(args, "journal", None),
    )
    guard.config_writer = ConfigWriter(loaded)
    operator = local_operator(dict(config.roles.users), config.roles.default)
    return CapguardApp(
        guard,
        operator,
        guard=guard,
        refresh_hz=console.refresh_hz,
        theme=theme,
        readonly=bool(getattr(args, "readonly", False)),
        keymap=keymap,
        defaults={
            "strategy": config.deleverage.strategy,
            "method": config.deleverage.method,
            "mode": config.liquidation.mode,
        },
    )


def run(loaded: Any, args: Any) -> int:
    import sys

    try:
        app = build_app(loaded, args)
    except ValueError as exc:  # an unknown theme, or an unknown action id in [console.keys]
        print(f"capguard: invalid configuration: {exc}", file=sys.stderr)
        return EX_CONFIG
    result = app.run()
    if app.guard is not None:
        app.guard.journal.close()
    return int(result or 0)
