"""Confirmation and the base of every command dialog.

A confirmation is a ModalScreen[bool] answered with y / n / Escape, focus starting on the safe
choice. Command dialogs send through the app (`CapguardApp.send`), so every outcome lands in
the action log, and show the engine's own message when it refuses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from engine.view import CommandResult

if TYPE_CHECKING:
    from capguard_tui.app import CapguardApp


class ConfirmScreen(ModalScreen[bool]):
    """Yes or no. y confirms, n or Escape cancels; the No button has the focus."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", id="yes"),
        Binding("n", "answer(False)", "No", id="no"),
        Binding("escape", "answer(False)", "Cancel", show=False),
    ]
    AUTO_FOCUS = "#no"

    def __init__(self, title: str, body: str, yes: str = "Yes") -> None:
        super().__init__(classes="dialog-screen")
        self._title, self._body, self._yes = title, body, yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog confirm"):
            yield Label(self._title, classes="dialog-title")
            yield Static(self._body, classes="dialog-body")
            with Horizontal(classes="buttons"):
                yield Button("No (n)", id="no", variant="primary", compact=True)
                yield Button(f"{self._yes} (y)", id="yes", variant="error", compact=True)

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "yes")


class CommandModal(ModalScreen[CommandResult | None]):
    """A dialog that sends one or more operator commands for an account.

    Subclasses compose their fields inside `fields()`, list their buttons in `BUTTONS`
    (id, label, variant) and handle `on_button_pressed`. Escape always cancels.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", show=False)]
    TITLE = ""
    BUTTONS: tuple[tuple[str, str, str], ...] = (("cancel", "Cancel", "primary"),)
    AUTO_FOCUS = "#cancel"

    def __init__(self, account: str | None) -> None:
        super().__init__(classes="dialog-screen")
        self.account = account

    @property
    def capguard(self) -> CapguardApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text(), classes="dialog-title")
            yield from self.fields()
            yield Static("", id="message", classes="dialog-message")
            with Horizontal(classes="buttons"):
                for bid, label, variant in self.BUTTONS:
                    yield Button(label, id=bid, variant=variant, compact=True)  # type: ignore[arg-type]

    def title_text(self) -> str:
        return f"{self.TITLE} {self.account}" if self.account else self.TITLE

    def fields(self) -> ComposeResult:
        yield from ()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def say(self, text: str, ok: bool = False) -> None:
        cls = "ok" if ok else "refused"
        msg = self.query_one("#message", Static)
        msg.set_classes(f"dialog-message {cls}")
        msg.update(escape(text))

    def value(self, field_id: str) -> str:
        return self.query_one(f"#{field_id}", Input).value.strip()

    async def send(self, name: str, **params: Any) -> CommandResult:
        """Send through the app; close on success, stay open with the engine's message if refused."""
        if self.account is not None and "account" not in params and name not in ("kill_switch", "release_breaker"):
            params["account"] = self.account
        result = await self.capguard.send(name, **params)
        if result.ok:
            self.dismiss(result)
        else:
            self.say(result.message)
        return result

    async def confirm(self, title: str, body: str, yes: str = "Yes") -> bool:
        return bool(await self.app.push_screen_wait(ConfirmScreen(title, body, yes)))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            event.stop()
            # Textual also calls this handler for each class in the MRO: a subclass that
            # delegated here must not dismiss twice (popping the last screen).
            event.prevent_default()
            self.dismiss(None)


class QuietInput(Input):
    """An Input whose cursor does not blink (a blinking cursor wakes the app over SSH)."""

    cursor_blink = reactive(False, init=False)


def number_input(field_id: str, value: str = "", placeholder: str = "") -> Input:
    return QuietInput(value, placeholder=placeholder, id=field_id, type="number", compact=True)


def text_input(field_id: str, value: str = "", placeholder: str = "") -> Input:
    return QuietInput(value, placeholder=placeholder, id=field_id, compact=True)
