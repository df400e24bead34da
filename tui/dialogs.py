"""Dialogs any pane may open: a one-line text prompt and a yes/no confirmation."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, ScreenResultType
from textual.widgets import Button, Input, Label


class DialogScreen(ModalScreen[ScreenResultType]):
    """A modal box in the middle of the screen: a title, its content, a hint or buttons."""

    # Here rather than in app.tcss: parsed when the first dialog opens, not for the first frame.
    DEFAULT_CSS = """
    DialogScreen {
        align: center middle;
    }
    .dialog {
        width: 72;
        max-width: 100%;
        height: auto;
        max-height: 80%;
        padding: 1 2;
        background: $surface;
        border: thick $primary 60%;
    }
    .dialog-title {
        text-style: bold;
        padding-bottom: 1;
    }
    .dialog-hint {
        color: $text-muted;
        padding-top: 1;
    }
    .dialog-buttons {
        height: auto;
        align-horizontal: right;
    }
    .dialog-buttons Button {
        margin-left: 2;
    }
    """


class TextPromptScreen(DialogScreen[str | None]):
    """Ask for one line of text (e.g. a conversation's new title)."""

    AUTO_FOCUS = "#text-prompt-input"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="prompt-cancel"),
    ]

    def __init__(self, title: str, value: str = "") -> None:
        super().__init__()
        self.prompt_title = title
        self.value = value

    def compose(self) -> ComposeResult:
        """A title and an input."""
        with Vertical(classes="dialog"):
            yield Label(self.prompt_title, classes="dialog-title")
            yield Input(self.value, id="text-prompt-input")
            yield Label("Enter saves · Esc cancels", classes="dialog-hint")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        """Close without a value."""
        self.dismiss(None)


class ConfirmScreen(DialogScreen[bool]):
    """Ask a yes/no question; `y` or the Yes button confirms."""

    AUTO_FOCUS = "#confirm-no"  # start on the safe answer
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", id="confirm-yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm-no"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        """The question and two buttons."""
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="dialog-title")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Yes (y)", variant="error", id="confirm-yes")
                yield Button("No (n)", id="confirm-no")

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm-yes")

    def action_answer(self, answer: bool) -> None:
        """Close with the answer."""
        self.dismiss(answer)
