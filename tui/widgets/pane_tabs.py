"""The strip of pane names under the header: one line, the shown pane marked, click to switch."""

from __future__ import annotations

from collections.abc import Sequence

from textual import events
from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

# One widget rather than Textual's Tabs (a widget per tab, an animated underline): the strip is
# in the first frame, where every widget costs a style pass.


class PaneTabs(Widget):
    """Each pane's title and key, e.g. "Chat F2  Models F3"; `active` is the shown pane's id."""

    DEFAULT_CSS = """
    PaneTabs {
        height: 1;
        padding: 0 1;
        background: $panel;
        color: $text-muted;
    }
    """

    active: reactive[str] = reactive("")

    def __init__(self, tabs: Sequence[tuple[str, str, str]], active: str, *, id: str) -> None:
        """`tabs` holds (pane id, title, key) for each pane, in order."""
        super().__init__(id=id)
        self.tabs = tuple(tabs)
        self._tabs_at: list[tuple[int, int, str]] = []  # (first cell, end, pane id) as drawn
        self.set_reactive(PaneTabs.active, active)

    def render(self) -> Content:
        """The titles, the active one bold and underlined in the primary colour."""
        strip = Content("")
        self._tabs_at = []
        for pane_id, title, key in self.tabs:
            if strip.cell_length:
                strip += "   "
            shown = pane_id == self.active
            style = "bold $text-primary underline" if shown else "$text-muted"
            label = Content.assemble((title, style), " ", (key, "dim"))
            start = strip.cell_length
            self._tabs_at.append((start, start + label.cell_length, pane_id))
            strip += label
        return strip

    async def on_click(self, event: events.Click) -> None:
        """Show the pane whose name was clicked."""
        offset = event.get_content_offset(self)
        for first, end, pane_id in self._tabs_at:
            if offset is not None and first <= offset.x < end:
                event.stop()
                await self.app.run_action(f"show_pane('{pane_id}')")
                return
