"""The footer: Textual's, but it rebuilds its keys only when the keys it shows change."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.widgets import Footer

if TYPE_CHECKING:
    from textual.app import ComposeResult
    from textual.screen import Screen

# What the footer shows: each shown binding with its state, tooltip and how its key is written.
ShownKeys = tuple[tuple[object, ...], ...]


class KeysFooter(Footer):
    """A Footer that recomposes once per burst of binding changes, and only if its keys changed.

    Textual's Footer recomposes after every refresh of the bindings (three at start-up: the
    screen resuming, the focus moving, and the refresh after that), and composing its keys costs
    a style update per key. `show_keys` composes the keys before the first frame is painted.
    """

    def __init__(self) -> None:
        super().__init__()
        self._update_pending = False
        self._shown: ShownKeys | None = None

    def _keys_to_show(self) -> ShownKeys:
        app = self.app
        active = self.screen.active_bindings
        shown: list[tuple[object, ...]] = [
            (binding, enabled, tooltip, app.get_key_display(binding))
            for (_, binding, enabled, tooltip) in active.values()
            if binding.show
        ]
        palette = active.get(app.COMMAND_PALETTE_BINDING)
        if palette is not None and self.show_command_palette and app.ENABLE_COMMAND_PALETTE:
            _, binding, enabled, tooltip = palette
            shown.append(("palette", binding, enabled, tooltip, app.get_key_display(binding)))
        return tuple(shown)

    def compose(self) -> ComposeResult:
        """Textual's keys; remembers which keys they are."""
        self._shown = self._keys_to_show() if self._bindings_ready else None
        yield from super().compose()

    def bindings_changed(self, screen: Screen[object]) -> None:
        """Update the keys after the next refresh, once however many changes come before it."""
        self._bindings_ready = True
        if not screen.app.app_focus:
            return
        if self.is_attached and screen is self.screen and not self._update_pending:
            self._update_pending = True
            self.call_after_refresh(self._update_keys)

    async def _update_keys(self) -> None:
        self._update_pending = False
        if self.is_attached and self._keys_to_show() != self._shown:
            await self.recompose()

    async def show_keys(self) -> None:
        """Compose the keys now (before the first frame), rather than a refresh later."""
        self._bindings_ready = True
        if self._keys_to_show() != self._shown:
            # Run as the footer (the keys bind to its `compact`), though the app calls this.
            with self._context():
                await self.recompose()
