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


GAUGE_CELLS = 10


def context_gauge(fill: float, figures: str) -> Content:
    """A bar of how full the context window is, coloured as it nears full, with the figures."""
    filled = round(max(0.0, min(1.0, fill)) * GAUGE_CELLS)
    colour = "$success" if fill < 0.7 else "$warning" if fill < 0.9 else "$error"
    return Content.assemble(
        "context ",
        ("█" * filled, colour),
        ("░" * (GAUGE_CELLS - filled), "$text-muted"),
        f" {fill:.0%}",
        (f" · {figures}" if figures else "", "$text-muted"),
    )


class ModelBar(Widget):
    """Keeps a current model among `names` (the pane sets them); the person's pick is posted up.

    One widget that draws its own button (a Button and a Label would cost the first frame two
    more widgets and Button's styles); a click opens the picker.
    """

    names: reactive[tuple[str, ...]] = reactive((), init=False)
    model: reactive[str] = reactive("", init=False)
    context: reactive[tuple[float, str] | None] = reactive(None, init=False)
    """How full the model's context window was on the last turn (0-1) and the figures, or None."""
    reason: reactive[str] = reactive("", init=False)
    """Why the engine started on its model (shown in the tooltip)."""

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
        self.chosen = False  # picked by the person or set by a conversation: no default then
        self.base_tooltip = tooltip
        self.tooltip = tooltip
        self.set_reactive(ModelBar.names, tuple(names))
        self.set_reactive(ModelBar.model, self._fallback())

    def render(self) -> Content:
        """ "Model", the model's name on a button-like background, and the context gauge."""
        name = f" {self.model} ▾ " if self.model else " no model ▾ "
        left = Content.assemble("Model  ", (name, "bold $text on $boost"))
        if self.context is None:
            return left
        fill, figures = self.context
        gauge = context_gauge(fill, figures)
        room = self.content_region.width - left.cell_length
        if gauge.cell_length + 2 > room:
            gauge = context_gauge(fill, "")
        if gauge.cell_length + 2 > room:
            return left
        return Content.assemble(left, " " * (room - gauge.cell_length), gauge)

    def offer_default(self, name: str, reason: str) -> None:
        """Start on `name` (the engine's default, for `reason`) unless a model was chosen."""
        if self.chosen:
            return
        if name not in self.names:
            self.names = (*self.names, name)
        self.preferred = name
        self.model = name
        self.reason = reason

    def watch_context(self) -> None:
        """Say the context figures in the tooltip too."""
        self._update_tooltip()

    def watch_reason(self) -> None:
        """Say why this model in the tooltip."""
        self._update_tooltip()

    def _update_tooltip(self) -> None:
        lines = [self.base_tooltip]
        if self.reason:
            lines.append(f"Started on {self.model}: {self.reason}")
        if self.context is not None:
            lines.append(f"Context of the last turn: {self.context[1]}")
        self.tooltip = "\n".join(lines)

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
                self.chosen = True
                self.preferred = name
                self.reason = ""
                self.model = name
                self.post_message(self.Changed(name, picked=True))

        self.app.push_screen(ModelPickerScreen(entries, self.model), picked)

    def on_click(self, event: events.Click) -> None:
        """Ask the pane to open the picker."""
        event.stop()
        self.post_message(self.PickRequested())
