"""`?`: every key from the registry, with what it does and, when the operator may not use it,
why."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.markup import escape
from textual.screen import ModalScreen
from textual.widgets import Static

from capguard_tui import keys
from engine.operators import Role

SCOPE_TITLES = {
    "app": "Everywhere",
    "overview": "Overview",
    "account": "Selected account (overview and detail)",
    "alerts": "Alerts",
    "table": "Accounts table",
    "heatmap": "Heatmap",
    "screen": "Screens",
    "modal": "Dialogs",
}


def help_text(role: Role, operator: str, readonly: bool, keymap: dict[str, str]) -> str:
    lines = [
        f"[b]capguard keys[/]   operator [b]{escape(operator)}[/] ({role.name.lower()})"
        + ("   [b]read-only[/]" if readonly else ""),
        '[dim]Remap any key in config.toml: [console.keys] <action id> = "key"[/]',
    ]
    for scope, title in SCOPE_TITLES.items():
        entries = [k for k in keys.REGISTRY if k.scope == scope]
        if not entries:
            continue
        lines += ["", f"[b]{title}[/]"]
        for k in entries:
            why = keys.refusal(k, role, readonly)
            if why == "read-only console":
                continue
            label = keys.key_label(k, keymap)
            text = f"  {escape(label):<8} {escape(k.description):<46} [dim]{k.id}[/]"
            lines.append(f"[dim]{text}  ({escape(why)})[/]" if why else text)
    lines += [
        "",
        "[b]Also[/]",
        f"  {'ctrl+p':<8} Command palette: every action, themes, screens",
    ]
    return "\n".join(lines)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "close", "Close", show=False),
    ]

    def __init__(self, text: str) -> None:
        super().__init__(classes="dialog-screen")
        self._text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog help"):
            yield Static(self._text)

    def action_close(self) -> None:
        self.dismiss(None)
