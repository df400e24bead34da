"""The chat pane's sidebar: the saved conversations, with keys to open, rename and delete them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from textual import events, on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Label

from muxtui.tui.panes.chat.conversation_list import ConversationList


class ChatSidebar(Vertical):
    """Conversations by title; on a narrow screen it unfolds only while it has the focus."""

    class RenameChosen(Message):
        """The person gave a conversation a new title."""

        def __init__(self, conversation_id: int, title: str) -> None:
            super().__init__()
            self.conversation_id = conversation_id
            self.title = title

    class DeleteConfirmed(Message):
        """The person confirmed deleting a conversation."""

        def __init__(self, conversation_id: int) -> None:
            super().__init__()
            self.conversation_id = conversation_id

    def __init__(self, keys: Mapping[str, str], *, id: str | None = None) -> None:
        """`keys` maps binding ids to how their keys are written, e.g. {"new-chat": "^n"}."""
        super().__init__(id=id)
        self.keys = keys

    def compose(self) -> ComposeResult:
        """A title, the list, and a hint that changes with the focus."""
        keys = self.keys
        # The list itself comes with the saved conversations, once the engine has started: empty,
        # it would cost the first frame a widget that draws nothing.
        yield Label("Conversations", classes="section-title")
        yield Label(
            f"{keys['focus-conversations']} pick · {keys['new-chat']} new",
            classes="hint -unfocused",
        )
        yield Label(
            f"⏎ open · {keys['rename-chat']} rename · {keys['delete-chat']} delete · "
            f"{keys['leave-conversations']} back",
            classes="hint -focused",
        )

    @property
    def conversations(self) -> ConversationList:
        """The list widget."""
        return self.query_one(ConversationList)

    async def show_conversations(
        self, conversations: Sequence[tuple[int, str]], current_id: int | None
    ) -> None:
        """List `(id, title)` pairs, newest first, with the current one highlighted."""
        if not self.query(ConversationList):
            if not conversations:
                return  # nothing to show yet: an empty list would only repaint blank lines
            await self.mount(
                ConversationList(id="conversations"), after=self.query_one(".section-title")
            )
        self.conversations.show_conversations(conversations, current_id)

    async def open(self) -> None:
        """Show the list (unfolding it on a narrow screen) and focus it."""
        if not self.query(ConversationList):
            await self.mount(
                ConversationList(id="conversations"), after=self.query_one(".section-title")
            )
        self.add_class("-open")
        self.conversations.focus()

    @on(events.DescendantBlur)
    def _blurred(self) -> None:
        # A dialog opened over the list keeps it open; focus moving elsewhere on screen folds it.
        if self.app.screen is self.screen and not self.has_focus_within:
            self.remove_class("-open")

    @on(ConversationList.RenameRequested)
    def _rename_requested(self, event: ConversationList.RenameRequested) -> None:
        event.stop()
        self.ask_rename(event.conversation_id)

    @on(ConversationList.DeleteRequested)
    def _delete_requested(self, event: ConversationList.DeleteRequested) -> None:
        event.stop()
        self.ask_delete(event.conversation_id)

    def ask_rename(self, conversation_id: int) -> None:
        """Ask for a conversation's new title; posts `RenameChosen` unless cancelled."""
        from muxtui.tui.dialogs import TextPromptScreen

        option = self.conversations.get_option(str(conversation_id))

        def renamed(title: str | None) -> None:
            if title:
                self.post_message(self.RenameChosen(conversation_id, title))

        self.app.push_screen(TextPromptScreen("Rename conversation", str(option.prompt)), renamed)

    def ask_delete(self, conversation_id: int) -> None:
        """Ask before deleting a conversation; posts `DeleteConfirmed` on yes."""
        from muxtui.tui.dialogs import ConfirmScreen

        option = self.conversations.get_option(str(conversation_id))

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.post_message(self.DeleteConfirmed(conversation_id))

        self.app.push_screen(ConfirmScreen(f"Delete “{option.prompt}”?"), confirmed)
