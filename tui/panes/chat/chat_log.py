"""The scrolling list of a conversation's messages, keeping only the latest ones mounted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from textual.containers import VerticalScroll
from textual.widgets import Static

if TYPE_CHECKING:
    from muxtui.engine.history import StoredMessage
    from muxtui.tui.panes.chat.message_view import MessageView, ShownMessage

# Long chats mount only this many messages; older ones stay in history, not in the widget tree.
MAX_MOUNTED = 60


def _message_view_class() -> type[MessageView]:
    # Imported on first use: Markdown pulls in markdown-it (~70 ms), which the first frame of
    # an empty chat does not need. The app warms this import up after the first frame.
    from muxtui.tui.panes.chat.message_view import MessageView

    return MessageView


def shown(message: StoredMessage) -> ShownMessage:
    """How a stored message is displayed."""
    from muxtui.tui.panes.chat.message_view import ShownMessage

    return ShownMessage(
        message.role, message.content, message.model, message.status, message.stats, message.error
    )


class ChatLog(VerticalScroll):
    """The messages of one conversation; follows new text only while scrolled to the bottom."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, can_focus=True)
        self.hidden_count = 0

    def on_mount(self) -> None:
        """Stay at the bottom as text arrives, until the person scrolls up."""
        self.anchor()

    @property
    def message_views(self) -> list[MessageView]:
        """The mounted message views, oldest first."""
        view_class = _message_view_class()
        return [child for child in self.children if isinstance(child, view_class)]

    async def show_messages(self, messages: Sequence[ShownMessage]) -> None:
        """Replace the log with `messages`, mounting only the last `MAX_MOUNTED`."""
        view_class = _message_view_class()
        await self.remove_children()
        self.hidden_count = max(0, len(messages) - MAX_MOUNTED)
        shown = messages[self.hidden_count :]
        widgets: list[Static | MessageView] = []
        if self.hidden_count:
            widgets.append(self._hidden_note())
        widgets.extend(view_class(message) for message in shown)
        if widgets:
            await self.mount_all(widgets)
        self.anchor()

    async def add_message(self, message: ShownMessage) -> MessageView:
        """Mount one more message at the end, unmounting the oldest beyond the limit."""
        view = _message_view_class()(message)
        await self.mount(view)
        views = self.message_views
        if len(views) > MAX_MOUNTED:
            extra = views[: len(views) - MAX_MOUNTED]
            self.hidden_count += len(extra)
            await self.remove_children(extra)
            await self._update_hidden_note()
        return view

    async def add_exchange(self, prompt: str, model: str) -> MessageView:
        """Mount a prompt and the (empty, streaming) reply to it; returns the reply's view."""
        from muxtui.tui.panes.chat.message_view import ShownMessage

        await self.add_message(ShownMessage("user", prompt))
        view = await self.add_message(ShownMessage("assistant", "", model, status="streaming"))
        self.anchor()
        return view

    async def _update_hidden_note(self) -> None:
        notes = self.query(".hidden-note")
        if notes:
            notes.first(Static).update(self._hidden_text())
        elif self.hidden_count:
            await self.mount(self._hidden_note(), before=0)

    def _hidden_text(self) -> str:
        plural = "s" if self.hidden_count != 1 else ""
        return f"{self.hidden_count} earlier message{plural} not shown"

    def _hidden_note(self) -> Static:
        return Static(self._hidden_text(), classes="hidden-note")
