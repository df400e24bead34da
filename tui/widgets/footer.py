"""The footer: the keys that work now, drawn by one widget; the command palette's at the right."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import events
from textual.content import Content
from textual.widget import Widget

if TYPE_CHECKING:
    from textual.binding import Binding
    from textual.screen import Screen

# One widget rather than Textual's Footer (a widget per key, each restyled as the bindings
# change, recomposed after every refresh of them): the footer is in the first frame, and every
# widget there costs a style pass.


class KeysFooter(Widget):
    """The shown bindings of the focused widget and its ancestors; a click presses the key."""

    DEFAULT_CSS = """
    KeysFooter {
        dock: bottom;
        height: 1;
        background: $footer-background;
        color: $footer-description-foreground;
    }
    """

    def __init__(self) -> None:
        super().__init__()
        self._keys_at: list[tuple[int, int, str]] = []  # (first cell, end, key) as drawn

    def on_mount(self) -> None:
        """Redraw whenever the screen's bindings change (focus moved, a check_action flipped)."""
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)

    def on_unmount(self) -> None:
        """Stop listening to the screen."""
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, screen: Screen[object]) -> None:
        if screen is self.screen:
            self.refresh()

    def shown_bindings(self) -> list[tuple[Binding, bool]]:
        """The bindings the footer shows, each with whether it can run now."""
        return [
            (binding, enabled)
            for (_, binding, enabled, _tooltip) in self.screen.active_bindings.values()
            if binding.show
        ]

    def render(self) -> Content:
        """Each key and what it does, one or two spaces apart; the palette's key at the right."""
        app = self.app
        gap = " " if self.screen.has_class("-narrow") else "  "
        keys_at: list[tuple[int, int, str]] = []
        left = Content(" ")
        for binding, enabled in self.shown_bindings():
            if len(keys_at):
                left += gap
            label = self._key(binding, enabled)
            keys_at.append((left.cell_length, left.cell_length + label.cell_length, binding.key))
            left += label
        right = Content("")
        palette = self.screen.active_bindings.get(app.COMMAND_PALETTE_BINDING)
        if palette is not None and app.ENABLE_COMMAND_PALETTE:
            _, binding, enabled, _tooltip = palette
            right = Content.assemble("▏", self._key(binding, enabled), " ")
        room = self.size.width - right.cell_length
        if left.cell_length > room:
            left = left.truncate(max(0, room))
        start = max(room, left.cell_length)
        if palette is not None:
            keys_at.append((start + 1, start + right.cell_length, palette[1].key))
        self._keys_at = keys_at
        return Content.assemble(left, " " * max(0, room - left.cell_length), right)

    def on_click(self, event: events.Click) -> None:
        """Press the key that was clicked."""
        offset = event.get_content_offset(self)
        for first, end, key in self._keys_at:
            if offset is not None and first <= offset.x < end:
                event.stop()
                self.app.simulate_key(key.split(",")[0])
                return

    def _key(self, binding: Binding, enabled: bool) -> Content:
        label = Content.assemble(
            (self.app.get_key_display(binding), "bold $footer-key-foreground"),
            " ",
            binding.description,
        )
        return label.stylize("dim") if not enabled else label
