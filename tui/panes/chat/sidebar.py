"""The chat pane's sidebar: the saved conversations, a filter, and keys to act on them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Label

from muxtui.tui.panes.chat.conversation_list import ConversationList

if TYPE_CHECKING:
    from muxtui.engine.events import Conversation

# Seconds of no typing in the filter before the conversations are searched.
FILTER_PAUSE_S = 0.15


class ConversationFilter(Input):
    """The filter box: words matched in titles and message text; ↓ or Enter goes to the list."""

    BINDINGS = [  # noqa: RUF012  (Input's are a plain list too)
        ("down", "to_list", "To the list"),
        ("escape", "leave", "Clear or leave"),
    ]

    def action_to_list(self) -> None:
        """Move on to the list, now: the keys typed next (Enter opens) are the list's even when
        they come before a queued focus change would have been handled."""
        lists = self.screen.query(ConversationList)
        if lists:
            self.screen.set_focus(lists.first())

    def action_leave(self) -> None:
        """Clear the filter, or go back to the list when it is empty."""
        if self.value:
            self.value = ""
        else:
            self.action_to_list()


class ChatSidebar(Vertical):
    """Conversations by title; on a narrow screen it unfolds only while it has the focus."""

    # Priority, and the focus moved at once: what is typed right after `/` lands in the filter
    # (a queued focus change would let the list take those keys as its own, e.g. d deletes).
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "slash",
            "filter",
            "Filter",
            id="filter-chats",
            tooltip="Filter the conversations by words in their title or text",
            show=False,
            priority=True,
        ),
    ]

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

    class FilterChanged(Message):
        """The filter's text settled (after a short pause in typing)."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, keys: Mapping[str, str], *, id: str | None = None) -> None:
        """`keys` maps binding ids to how their keys are written, e.g. {"new-chat": "^n"}."""
        super().__init__(id=id)
        self.keys = keys
        self.filter_text = ""

    def compose(self) -> ComposeResult:
        """A title, the list, and a hint that changes with the focus."""
        keys = self.keys
        # The filter and the list come with the saved conversations, once the engine has
        # started: empty, they would cost the first frame widgets that draw nothing.
        yield Label("Conversations", classes="section-title")
        yield Label(
            f"{keys['focus-conversations']} pick · {keys['new-chat']} new",
            classes="hint -unfocused",
        )
        yield Label(
            f"⏎ open · {keys['rename-chat']} rename · {keys['delete-chat']} delete · "
            f"{keys['export-chat']} export · {keys['filter-chats']} filter · "
            f"{keys['leave-conversations']} back",
            classes="hint -focused",
        )

    @property
    def conversations(self) -> ConversationList:
        """The list widget."""
        return self.query_one(ConversationList)

    async def _ensure_list(self) -> None:
        if not self.query(ConversationList):
            title = self.query_one(".section-title")
            await self.mount_all(
                [
                    ConversationFilter(
                        placeholder=f"{self.keys['filter-chats']} filter: title or text",
                        id="conversation-filter",
                    ),
                    ConversationList(id="conversations"),
                ],
                after=title,
            )

    async def show_conversations(
        self, conversations: Sequence[Conversation], current_id: int | None
    ) -> None:
        """List conversations, newest first, with the current one highlighted."""
        if not self.query(ConversationList):
            if not conversations and not self.filter_text:
                return  # nothing to show yet: an empty list would only repaint blank lines
            await self._ensure_list()
        self.conversations.show_conversations(conversations, current_id)
        title = self.query_one(".section-title", Label)
        if self.filter_text:
            count = len(conversations)
            title.update(f"Conversations · {count} match{'' if count == 1 else 'es'}")
        else:
            title.update("Conversations")

    async def open(self) -> None:
        """Show the list (unfolding it on a narrow screen) and focus it."""
        await self._ensure_list()
        self.add_class("-open")
        self.conversations.focus()

    async def open_filter(self) -> None:
        """Show the list and focus its filter box."""
        await self._ensure_list()
        self.add_class("-open")
        self.query_one(ConversationFilter).focus()

    @on(events.DescendantBlur)
    def _blurred(self) -> None:
        # A dialog opened over the list keeps it open; focus moving elsewhere on screen folds it.
        if self.app.screen is self.screen and not self.has_focus_within:
            self.remove_class("-open")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """`/` filters only from the list (elsewhere it is a character to type)."""
        if action == "filter":
            return bool(self.query(ConversationList)) and self.conversations.has_focus
        return True

    def action_filter(self) -> None:
        """Move to the filter box now."""
        self.screen.set_focus(self.query_one(ConversationFilter))

    @on(Input.Submitted, "#conversation-filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.query_one(ConversationFilter).has_focus:  # else the person has moved on
            self.screen.set_focus(self.conversations)

    @on(Input.Changed, "#conversation-filter")
    def _filter_typed(self, event: Input.Changed) -> None:
        event.stop()
        self.filter_text = event.value.strip()
        text = self.filter_text
        self.set_timer(FILTER_PAUSE_S, lambda: self._filter_settled(text))

    def _filter_settled(self, text: str) -> None:
        if text == self.filter_text:  # else more was typed since; its own timer follows
            self.post_message(self.FilterChanged(text))

    @on(ConversationList.Requested)
    def _requested(self, event: ConversationList.Requested) -> None:
        title = self.conversations.title_of(event.conversation_id)
        if event.what == "rename":
            event.stop()
            self.ask_rename(event.conversation_id, title)
        elif event.what == "delete":
            event.stop()
            self.ask_delete(event.conversation_id, title)

    def ask_rename(self, conversation_id: int, title: str) -> None:
        """Ask for a conversation's new title; posts `RenameChosen` unless cancelled."""
        from muxtui.tui.dialogs import TextPromptScreen

        def renamed(title: str | None) -> None:
            if title:
                self.post_message(self.RenameChosen(conversation_id, title))

        self.app.push_screen(TextPromptScreen("Rename conversation", title), renamed)

    def ask_delete(self, conversation_id: int, title: str) -> None:
        """Ask before deleting a conversation; posts `DeleteConfirmed` on yes."""
        from muxtui.tui.dialogs import ConfirmScreen

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.post_message(self.DeleteConfirmed(conversation_id))

        self.app.push_screen(ConfirmScreen(f"Delete “{title}”?"), confirmed)
