"""The chat's toolbar: which model the next turn goes to, and a button that opens the picker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.reactive import var
from textual.widgets import Button, Label

if TYPE_CHECKING:
    from muxtui.engine.events import ModelEntry


class ModelBar(Horizontal):
    """Keeps a current model among `names` (the pane sets them); the person's pick is posted up."""

    names: var[tuple[str, ...]] = var((), init=False)
    model: var[str] = var("", init=False)

    class Changed(Message):
        """The current model changed (picked, or the old one is gone); `model` may be empty."""

        def __init__(self, model: str, *, picked: bool) -> None:
            super().__init__()
            self.model = model
            self.picked = picked

    class PickRequested(Message):
        """The person pressed the model button."""

    def __init__(
        self, names: Sequence[str], preferred: str, tooltip: str, *, id: str | None = None
    ) -> None:
        """`preferred` (the last model used) is chosen whenever it is among the names."""
        super().__init__(id=id)
        self.preferred = preferred
        self.tooltip_text = tooltip
        self.set_reactive(ModelBar.names, tuple(names))
        self.set_reactive(ModelBar.model, self._fallback())

    def compose(self) -> ComposeResult:
        """A label and the button."""
        yield Label("Model", classes="toolbar-label")
        yield Button(self._label(), id="model-button", compact=True, tooltip=self.tooltip_text)

    def _fallback(self) -> str:
        names = self.names
        if self.model in names:
            return self.model
        return self.preferred if self.preferred in names else (names[0] if names else "")

    def _label(self) -> str:
        return f"{self.model} ▾" if self.model else "no model ▾"

    def watch_names(self) -> None:
        """Keep the current model if it is still known, else fall back."""
        self.model = self._fallback()

    def watch_model(self, model: str) -> None:
        """Show the model on the button."""
        button = self.query_one("#model-button", Button)
        button.label = self._label()
        button.refresh(layout=True)  # the label's width changed
        self.post_message(self.Changed(model, picked=False))

    def pick(self, entries: Sequence[ModelEntry]) -> None:
        """Open the fuzzy picker over `entries`; the pick becomes the current model."""
        from muxtui.tui.panes.chat.model_picker import ModelPickerScreen

        def picked(name: str | None) -> None:
            if name:
                self.preferred = name
                self.model = name
                self.post_message(self.Changed(name, picked=True))

        self.app.push_screen(ModelPickerScreen(entries, self.model), picked)

    @on(Button.Pressed, "#model-button")
    def _pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.post_message(self.PickRequested())
