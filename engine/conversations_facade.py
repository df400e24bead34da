"""The Engine's conversation methods (a mixin of the facade): listing, searching, reading,
renaming and deleting saved conversations, and their settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from muxtui.engine.events import ChatSettings, Conversation, StoredMessage

if TYPE_CHECKING:
    from muxtui.engine.history import History


class ConversationsMixin:
    """The saved conversations, read and changed through the history."""

    history: History

    async def list_conversations(self, limit: int | None = None) -> list[Conversation]:
        """Conversations, most recently active first; at most `limit` of them if given."""
        return await self.history.list_conversations(limit)

    async def search_conversations(self, text: str, limit: int | None = None) -> list[Conversation]:
        """Conversations whose title or any message contains `text`, most recent first."""
        return await self.history.search_conversations(text, limit)

    async def get_conversation(self, conversation_id: int) -> Conversation | None:
        """One conversation's summary, or None if it does not exist."""
        return await self.history.get_conversation(conversation_id)

    async def conversation_messages(
        self, conversation_id: int, newest: int | None = None
    ) -> list[StoredMessage]:
        """A conversation's messages in order, each with its status (empty if it is gone); only
        the `newest` last ones if given."""
        return await self.history.messages(conversation_id, newest)

    async def rename_conversation(self, conversation_id: int, title: str) -> None:
        """Give a conversation a new title; `LookupError` if it is gone."""
        await self.history.rename(conversation_id, title)

    async def delete_conversation(self, conversation_id: int) -> None:
        """Delete a conversation and its messages (nothing happens if it is gone already)."""
        await self.history.delete(conversation_id)

    async def conversation_settings(self, conversation_id: int) -> ChatSettings:
        """A conversation's saved settings; defaults if it has none or is gone."""
        return await self.history.settings(conversation_id) or ChatSettings()

    async def save_conversation_settings(
        self, conversation_id: int, settings: ChatSettings
    ) -> None:
        """Keep `settings` with a conversation; `LookupError` if it is gone."""
        await self.history.save_settings(conversation_id, settings)
