"""The list of saved conversations, newest first, with keys to open, rename and delete them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option, OptionDoesNotExist


class ConversationList(OptionList):
    """Saved conversations by title; selecting one opens it in the chat pane."""

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

    class RenameRequested(Message):
        """The person asked to rename a conversation."""

        def __init__(self, conversation_id: int) -> None:
            super().__init__()
            self.conversation_id = conversation_id

    class DeleteRequested(Message):
        """The person asked to delete a conversation."""

        def __init__(self, conversation_id: int) -> None:
            super().__init__()
            self.conversation_id = conversation_id

    def show_conversations(
        self, conversations: Sequence[tuple[int, str]], current_id: int | None
    ) -> None:
        """Replace the options with `(id, title)` pairs and highlight the current one."""
        self.clear_options()
        self.add_options(
            Option(title or "Untitled", id=str(conversation_id))
            for conversation_id, title in conversations
        )
        if current_id is not None:
            try:
                self.highlighted = self.get_option_index(str(current_id))
            except OptionDoesNotExist:  # not saved yet
                self.highlighted = None
        else:
            self.highlighted = None

    def on_focus(self) -> None:
        """Put the cursor on the newest conversation when none is highlighted yet."""
        if self.highlighted is None and self.option_count:
            self.highlighted = 0

    @property
    def highlighted_id(self) -> int | None:
        """The conversation id under the cursor, if any."""
        option = self.highlighted_option
        return int(option.id) if option is not None and option.id is not None else None

    def action_rename(self) -> None:
        """Ask the pane to rename the highlighted conversation."""
        if (conversation_id := self.highlighted_id) is not None:
            self.post_message(self.RenameRequested(conversation_id))

    def action_leave(self) -> None:
        """Hand focus back to the pane."""
        self.post_message(self.Left())

    def action_delete(self) -> None:
        """Ask the pane to delete the highlighted conversation."""
        if (conversation_id := self.highlighted_id) is not None:
            self.post_message(self.DeleteRequested(conversation_id))
