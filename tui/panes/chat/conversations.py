"""The chat pane's conversation operations through the engine facade: list and filter, open,
rename, delete, export, and keeping the open conversation's settings."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from muxtui.tui.display import describe, shorten_home
from muxtui.tui.panes.chat.chat_log import ChatLog, shown
from muxtui.tui.panes.chat.chat_settings import ChatSettings, ChatSettingsError
from muxtui.tui.panes.chat.model_bar import ModelBar
from muxtui.tui.panes.chat.sidebar import ChatSidebar

if TYPE_CHECKING:
    from muxtui.engine.core import Engine
    from muxtui.tui.panes.chat.pane import ChatPane


# Messages read first when a conversation opens (more than a screen holds).
READ_FIRST = 32


class ConversationKeeper:
    """Does what the person asks of conversations, and shows the outcome in the pane."""

    def __init__(self, pane: ChatPane, engine: Engine) -> None:
        self.pane = pane
        self.engine = engine

    async def show_list(self, filter_text: str) -> None:
        """List the conversations, or those whose title or text holds `filter_text`."""
        engine = self.engine
        if filter_text:
            conversations = await engine.search_conversations(filter_text)
        else:
            conversations = await engine.list_conversations()
        sidebar = self.pane.query_one(ChatSidebar)
        if sidebar.filter_text == filter_text:  # else a newer filter's listing follows
            await sidebar.show_conversations(conversations, self.pane.conversation_id)

    async def open(self, conversation_id: int) -> None:
        """Show a saved conversation from its newest message, with its model and settings.

        Its newest messages are read first and shown; the rest follow in a second read.
        """
        pane, engine = self.pane, self.engine
        conversation, stored, settings = await asyncio.gather(
            engine.get_conversation(conversation_id),
            engine.conversation_messages(conversation_id, newest=READ_FIRST),
            engine.conversation_settings(conversation_id),
        )
        if conversation is None:
            pane.notify("That conversation is gone (deleted elsewhere?).", severity="warning")
            await pane.refresh_conversations()
            return
        pane.conversation_id = conversation_id
        pane.set_title(conversation.title or "Untitled")
        pane.query_one(ChatSettings).load(settings)
        bar = pane.query_one(ModelBar)
        bar.context = None
        if conversation.model in bar.names:
            bar.chosen = True
            bar.model = conversation.model
        log = pane.query_one(ChatLog)
        await log.show_messages([shown(message) for message in stored])
        pane.show_log_or_guide()
        pane.note("")
        if len(stored) == READ_FIRST:  # maybe more: the rest, once the newest are on screen
            painted: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def mark_painted() -> None:
                if not painted.done():
                    painted.set_result(None)

            pane.call_after_refresh(mark_painted)
            await painted
            everything = await engine.conversation_messages(conversation_id)
            first_id = stored[0].id
            await log.add_older([shown(m) for m in everything if m.id < first_id])
        if model := pane.current_model:  # its next turn then only counts its new message
            pane.run_worker(
                engine.warm_context(model, conversation_id),
                group="warm-context",
                exclusive=True,
                exit_on_error=False,
            )

    async def rename(self, conversation_id: int, title: str) -> None:
        """Give a conversation a new title."""
        try:
            await self.engine.rename_conversation(conversation_id, title)
        except LookupError:
            self.pane.notify("That conversation is gone (deleted elsewhere?).", severity="warning")
        else:
            if conversation_id == self.pane.conversation_id:
                self.pane.set_title(title)
        await self.pane.refresh_conversations()

    async def delete(self, conversation_id: int) -> None:
        """Delete a conversation and its messages."""
        await self.engine.delete_conversation(conversation_id)
        await self.pane.refresh_conversations()

    def save_settings(self, conversation_id: int) -> None:
        """Keep the settings on screen with a conversation, if they are valid (in a worker)."""
        try:
            settings = self.pane.query_one(ChatSettings).settings()
        except ChatSettingsError:
            return  # the settings say what is wrong; nothing invalid is kept

        async def save() -> None:
            with contextlib.suppress(LookupError):  # deleted meanwhile: nothing to keep
                await self.engine.save_conversation_settings(conversation_id, settings)

        self.pane.run_worker(save(), group="save-settings", exit_on_error=False)

    def export(self, conversation_id: int) -> None:
        """Write a conversation to `<title>.md` (in a worker) and say where it went."""
        self.pane.run_worker(self._export(conversation_id), group="export", exit_on_error=False)

    async def _export(self, conversation_id: int) -> None:
        from muxtui.tui.panes.chat.export import (
            conversation_markdown,
            export_folder,
            write_export,
        )

        pane, engine = self.pane, self.engine
        conversation = await engine.get_conversation(conversation_id)
        if conversation is None:
            pane.notify("That conversation is gone (deleted elsewhere?).", severity="warning")
            return
        text = conversation_markdown(
            conversation, await engine.conversation_messages(conversation_id)
        )
        folder = export_folder()
        try:
            path = await asyncio.to_thread(write_export, folder, conversation.title, text)
        except OSError as exc:
            pane.notify(
                f"could not write to {shorten_home(folder)} ({exc.strerror or describe(exc)}); "
                "make it "
                "writable, or start muxtui in a folder that is",
                title="export",
                severity="error",
                timeout=15,
            )
            return
        pane.notify(f"Exported to {shorten_home(path)}", title="export", timeout=10)
