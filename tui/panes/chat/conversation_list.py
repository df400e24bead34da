"""The list of saved conversations, newest first: one line each with its date and size."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from textual.binding import Binding, BindingType
from textual.content import Content
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option, OptionDoesNotExist

if TYPE_CHECKING:
    from textual import events

    from muxtui.engine.events import Conversation

# Width of the list's lines before it is laid out (the sidebar's, less its border and padding).
DEFAULT_WIDTH = 27


def when(timestamp: float, now: float | None = None) -> str:
    """A short date: the time today, the month and day this year, else the year."""
    now = time.time() if now is None else now
    moment, today = time.localtime(timestamp), time.localtime(now)
    if moment[:3] == today[:3]:
        return time.strftime("%H:%M", moment)
    if moment.tm_year == today.tm_year:
        return f"{time.strftime('%b', moment)} {moment.tm_mday}"
    return str(moment.tm_year)


def compact_count(count: int) -> str:
    """A message count in at most four characters: 12, 480, 2.0k, 15k."""
    if count < 1000:
        return str(count)
    if count < 10_000:
        return f"{count / 1000:.1f}k"
    return f"{count // 1000}k"


def conversation_line(conversation: Conversation, width: int, now: float | None = None) -> Content:
    """One line: the title (cut to fit, with an ellipsis), then its date and message count."""
    meta = f"{when(conversation.updated_at, now)} {compact_count(conversation.message_count)}"
    room = max(1, width - len(meta) - 1)
    title = Content(conversation.title or "Untitled").truncate(room, ellipsis=True)
    gap = " " * max(1, width - title.cell_length - len(meta))
    return Content.assemble(title, gap, (meta, "$text-muted"))


class ConversationList(OptionList):
    """Saved conversations; selecting one opens it in the chat pane."""

    # Off the footer: the sidebar's hint shows these while the list has the focus.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "r",
            "rename",
            "Rename",
            id="rename-chat",
            tooltip="Rename this conversation",
            show=False,
        ),
        Binding(
            "d,delete",
            "delete",
            "Delete",
            id="delete-chat",
            tooltip="Delete this conversation",
            show=False,
        ),
        Binding(
            "e",
            "export",
            "Export",
            id="export-chat",
            tooltip="Export this conversation to a Markdown file",
            show=False,
        ),
        Binding(
            "escape",
            "leave",
            "Back",
            id="leave-conversations",
            tooltip="Back to the prompt",
            show=False,
        ),
    ]

    class Left(Message):
        """The person left the list without opening a conversation."""

    class Requested(Message):
        """The person asked for something done to a conversation: rename, delete or export."""

        def __init__(self, what: str, conversation_id: int) -> None:
            super().__init__()
            self.what = what  # "rename", "delete" or "export"
            self.conversation_id = conversation_id

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.conversations: list[Conversation] = []
        self._width = 0

    def show_conversations(
        self, conversations: Sequence[Conversation], current_id: int | None
    ) -> None:
        """Replace the options with `conversations` and highlight the current one."""
        self.conversations = list(conversations)
        self._show_lines(current_id)

    def _show_lines(self, current_id: int | None) -> None:
        width = self.scrollable_content_region.width or DEFAULT_WIDTH
        self._width = width
        now = time.time()
        self.clear_options()
        self.add_options(
            Option(conversation_line(conversation, width, now), id=str(conversation.id))
            for conversation in self.conversations
        )
        highlighted = None
        if current_id is not None:
            with contextlib.suppress(OptionDoesNotExist):  # not saved yet, or filtered out
                highlighted = self.get_option_index(str(current_id))
        if highlighted is None and self.has_focus and self.option_count:
            highlighted = 0  # the cursor stays in a list that has the focus
        self.highlighted = highlighted

    def on_resize(self, event: events.Resize) -> None:
        """Fit the lines to the new width."""
        if self.scrollable_content_region.width != self._width and self.conversations:
            self._show_lines(self.highlighted_id)

    def on_focus(self) -> None:
        """Put the cursor on the newest conversation when none is highlighted yet."""
        if self.highlighted is None and self.option_count:
            self.highlighted = 0

    @property
    def highlighted_id(self) -> int | None:
        """The conversation id under the cursor, if any."""
        option = self.highlighted_option
        return int(option.id) if option is not None and option.id is not None else None

    def title_of(self, conversation_id: int) -> str:
        """The title of a listed conversation ("Untitled" if it has none or is not listed)."""
        found = (c.title for c in self.conversations if c.id == conversation_id)
        return next(found, "") or "Untitled"

    def _request(self, what: str) -> None:
        if (conversation_id := self.highlighted_id) is not None:
            self.post_message(self.Requested(what, conversation_id))

    def action_rename(self) -> None:
        """Ask the pane to rename the highlighted conversation."""
        self._request("rename")

    def action_delete(self) -> None:
        """Ask the pane to delete the highlighted conversation."""
        self._request("delete")

    def action_export(self) -> None:
        """Ask the pane to export the highlighted conversation to Markdown."""
        self._request("export")

    def action_leave(self) -> None:
        """Hand focus back to the pane."""
        self.post_message(self.Left())
