"""The one registry of console actions: it drives the key bindings, the `?` help screen, the
command palette and the role checks. Keys are remappable from the `[console.keys]` table
(action id -> key, several keys comma-separated), e.g. `liquidate = "ctrl+l"`.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding

from engine.operators import REQUIRED_ROLE, Role, allowed


@dataclass(frozen=True)
class KeyAction:
    """One thing an operator can do from the console.

    `id` is the binding id (the name used in `[console.keys]` and in the palette); `action`
    the Textual action it runs; `scope` the screen(s) where the key lives; `permission` the
    engine's REQUIRED_ROLE entry that gates it; `override` actions are removed by --readonly.
    """

    id: str
    key: str
    action: str
    description: str
    scope: str
    permission: str | None = None
    override: bool = False
    show: bool = True
    label: str = ""  # short footer text (the description's first word when empty)


# Scopes: "app" (everywhere), "account" (overview and account detail: acts on the selected
# account), "overview", "table" (the accounts table), "alerts", "history", "heatmap", "modal".
REGISTRY: tuple[KeyAction, ...] = (
    KeyAction("help", "question_mark", "help", "Keys and what they do", "app", label="help"),
    KeyAction("quit", "q", "quit", "Quit (stops the embedded guard cleanly)", "app", label="quit"),
    KeyAction("pause_feed", "p", "pause_feed", "Pause / resume the simulated price feed", "app", label="pause"),
    KeyAction("show_overview", "1", "switch('overview')", "Overview of every account", "app", show=False),
    KeyAction("show_alerts", "2", "switch('alerts')", "Alerts: open and past", "app", show=False),
    KeyAction("show_history", "3", "switch('history')", "Actions and journal history", "app", show=False),
    KeyAction(
        "show_heatmap", "4", "switch('heatmap')", "Risk heatmap: desks or strategies vs levels", "app", show=False
    ),
    KeyAction(
        "show_analytics", "5", "switch('analytics')", "Analytics: book VaR/ES, scenarios, actions", "app", show=False
    ),
    # stress, scenario_grid and what_if only look (nothing is sent): every role, --readonly too.
    KeyAction("stress", "x", "stress", "Stress test: a configured or ad-hoc scenario", "app", show=False),
    KeyAction("back", "escape", "back", "Back", "screen", show=False),
    KeyAction("open", "enter", "open", "Open the selected account", "overview", label="open"),
    KeyAction(
        "filter", "slash", "filter", "Filter: text, level:W, desk:NAME, strategy:NAME", "overview", label="filter"
    ),
    KeyAction("sort", "s", "sort", "Cycle the sort column", "overview", label="sort"),
    KeyAction("sort_reverse", "i", "sort_reverse", "Invert the sort order", "overview", show=False),
    KeyAction(
        "deleverage", "d", "deleverage", "Deleverage (dry run first)", "account", "deleverage", True, label="delev"
    ),
    KeyAction(
        "liquidate",
        "L",
        "liquidate",
        "Liquidate (type the account id)",
        "account",
        "liquidate",
        True,
        label="liquidate",
    ),
    KeyAction(
        "thresholds", "t", "thresholds", "Edit thresholds", "account", "tighten_thresholds", True, label="thresh"
    ),
    KeyAction("hold", "h", "hold", "Hold / resume automatic action", "account", "hold", True, label="hold"),
    KeyAction("reset", "r", "reset", "Reset a halted account", "account", "reset", True, label="reset"),
    KeyAction(
        "schedule",
        "S",
        "schedule",
        "Schedule / cancel a scheduled action",
        "account",
        "schedule_deleverage",
        True,
        label="sched",
    ),
    KeyAction("acknowledge", "a", "acknowledge", "Acknowledge the alert", "alerts", "acknowledge", True, label="ack"),
    KeyAction(
        "kill_switch", "K", "kill_switch", "Kill switch: engage / release", "account", "kill_switch", True, label="kill"
    ),
    KeyAction(
        "release_breaker",
        "B",
        "release_breaker",
        "Release the circuit breaker",
        "account",
        "release_breaker",
        True,
        label="breaker",
    ),
    KeyAction("scenario_grid", "g", "scenario_grid", "Scenario grid: price moves x vol shocks", "account", show=False),
    KeyAction("what_if", "w", "what_if", "What-if: a hypothetical fill (sends nothing)", "account", show=False),
    KeyAction("cursor_up", "up,k", "cursor(-1)", "Previous row", "table", show=False),
    KeyAction("cursor_down", "down,j", "cursor(1)", "Next row", "table", show=False),
    KeyAction("page_up", "pageup", "page(-1)", "Page up", "table", show=False),
    KeyAction("page_down", "pagedown", "page(1)", "Page down", "table", show=False),
    KeyAction("first_row", "home", "first", "First row", "table", show=False),
    KeyAction("last_row", "end", "last", "Last row", "table", show=False),
    KeyAction("scroll_left", "left", "pan(-8)", "Scroll columns left", "table", show=False),
    KeyAction("scroll_right", "right", "pan(8)", "Scroll columns right", "table", show=False),
    KeyAction("group_by", "g", "group_by", "Heatmap: desks or strategies", "heatmap", label="group"),
    KeyAction("yes", "y", "yes", "Confirm", "modal", show=False),
    KeyAction("no", "n", "no", "Cancel", "modal", show=False),
)

BY_ID: dict[str, KeyAction] = {k.id: k for k in REGISTRY}
# The Textual action name (without arguments) -> registry entry, for check_action.
BY_ACTION: dict[str, KeyAction] = {k.action.split("(")[0]: k for k in REGISTRY}
DEBOUNCE_SECONDS = 0.5


def bindings(*scopes: str) -> list[Binding]:
    """Textual bindings for the registry entries of these scopes (ids are the registry ids)."""
    out = []
    for k in REGISTRY:
        if k.scope in scopes:
            out.append(
                Binding(k.key, k.action, k.label or _short(k.description), show=k.show, id=k.id, tooltip=k.description)
            )
    return out


def _short(description: str) -> str:
    return description.split(" (")[0].split(":")[0]


def keymap(overrides: dict[str, str]) -> dict[str, str]:
    """Validate a `[console.keys]` table; unknown action ids are refused whole (ValueError)."""
    unknown = sorted(set(overrides) - set(BY_ID))
    if unknown:
        raise ValueError(f"console.keys: unknown action id(s) {', '.join(unknown)} (known: {', '.join(sorted(BY_ID))})")
    for name, key in overrides.items():
        if not isinstance(key, str) or not key.strip():
            raise ValueError(f"console.keys.{name}: a key name is required, got {key!r}")
    return dict(overrides)


def by_key(keymap_: dict[str, str]) -> dict[str, KeyAction]:
    """Key name -> registry entry, after remapping (to explain a disabled key when pressed)."""
    out = {}
    for k in REGISTRY:
        for key in keymap_.get(k.id, k.key).split(","):
            out.setdefault(key.strip(), k)
    return out


def refusal(action: KeyAction, role: Role, readonly: bool) -> str | None:
    """Why this operator may not use the action, or None when they may."""
    if action.override and readonly:
        return "read-only console"
    if action.permission is not None and not allowed(role, action.permission):
        need = REQUIRED_ROLE[action.permission].name.lower()
        return f"needs the {need} role (you are {role.name.lower()})"
    return None


def check(action_name: str, role: Role, readonly: bool) -> bool | None:
    """Textual check_action answer: True allowed, None shown disabled, False removed (read-only)."""
    entry = BY_ACTION.get(action_name)
    if entry is None:
        return True
    if entry.override and readonly:
        return False
    return None if refusal(entry, role, readonly) else True


def key_label(action: KeyAction, keymap_: dict[str, str] | None = None) -> str:
    keys = (keymap_ or {}).get(action.id, action.key)
    names = {
        "question_mark": "?",
        "slash": "/",
        "escape": "Esc",
        "enter": "Enter",
        "pageup": "PgUp",
        "pagedown": "PgDn",
    }
    return ",".join(names.get(k.strip(), k.strip()) for k in keys.split(","))
