"""The chat's toolbar: which model the next turn goes to, and a button that opens the picker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from textual import events
from textual.content import Content
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

if TYPE_CHECKING:
    from muxtui.engine.events import ModelEntry


class ModelBar(Widget):
    """Keeps a current model among `names` (the pane sets them); the person's pick is posted up.

    One widget that draws its own button (a Button and a Label would cost the first frame two
    more widgets and Button's styles); a click opens the picker.
    """

    names: reactive[tuple[str, ...]] = reactive((), init=False)
    model: reactive[str] = reactive("", init=False)

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
        self.tooltip = tooltip
        self.set_reactive(ModelBar.names, tuple(names))
        self.set_reactive(ModelBar.model, self._fallback())

    def render(self) -> Content:
        """ "Model" and the model's name on a button-like background."""
        name = f" {self.model} ▾ " if self.model else " no model ▾ "
        return Content.assemble("Model  ", (name, "bold $text on $boost"))

    def _fallback(self) -> str:
        names = self.names
        if self.model in names:
            return self.model
        return self.preferred if self.preferred in names else (names[0] if names else "")

    def watch_names(self) -> None:
        """Keep the current model if it is still known, else fall back."""
        self.model = self._fallback()

    def watch_model(self, model: str) -> None:
        """Tell the pane (the bar redraws itself: `model` is reactive)."""
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

    def on_click(self, event: events.Click) -> None:
        """Ask the pane to open the picker."""
        event.stop()
        self.post_message(self.PickRequested())
