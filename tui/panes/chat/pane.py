"""The chat pane: conversations, model picker, settings, the streamed log and the prompt."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, ClassVar, cast

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.reactive import var
from textual.widgets import OptionList, Static

from muxtui.tui.bridge import DiscoveryFinished, EngineFailed, EventReceived
from muxtui.tui.display import describe, key_hint, key_hints
from muxtui.tui.panes import ChoiceMade, PaneHost, TitleChanged
from muxtui.tui.panes.chat.chat_log import ChatLog, shown
from muxtui.tui.panes.chat.chat_settings import ChatSettings, ChatSettingsError
from muxtui.tui.panes.chat.conversation_list import ConversationList
from muxtui.tui.panes.chat.empty_state import EmptyState
from muxtui.tui.panes.chat.model_bar import ModelBar
from muxtui.tui.panes.chat.prompt_input import PromptInput
from muxtui.tui.panes.chat.sidebar import ChatSidebar
from muxtui.tui.panes.chat.turns import Turn, TurnEnded, chat_message, record_prompt, stream_turn

if TYPE_CHECKING:
    from muxtui.engine.config import Config
    from muxtui.engine.core import Engine
    from muxtui.engine.events import ChatMessage


class ChatPane(Horizontal):
    """Chat with any known model; replies stream in as Markdown and can be stopped with Esc."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+n", "new_chat", "New chat", id="new-chat", tooltip="Start a new chat"),
        Binding(
            "ctrl+o", "pick_model", "Model", id="pick-model", tooltip="Switch model (fuzzy search)"
        ),
        Binding(
            "ctrl+l",
            "focus_conversations",
            "Chats",
            id="focus-conversations",
            tooltip="Pick a saved conversation (Enter opens, r renames, d deletes, Esc goes back)",
        ),
        Binding(
            "escape", "stop", "Stop", id="stop", tooltip="Stop the reply; the partial text stays"
        ),
        Binding("ctrl+r", "copy_reply", "Copy", id="copy-reply", tooltip="Copy the last reply"),
        Binding(
            "ctrl+s",
            "toggle_settings",
            "Settings",
            id="chat-settings",
            tooltip="System prompt, temperature and max tokens",
        ),
    ]

    engine: var[Engine | None] = var(None, init=False)
    """Set by the app once the engine has started (the pane is in the first frame, before it)."""

    def __init__(self, engine: Engine | None) -> None:
        super().__init__(id="chat-pane")
        self.set_reactive(ChatPane.engine, engine)
        self.engine_error = ""
        self.engine_ready = asyncio.Event()
        self.discovering = False
        self.conversation_id: int | None = None
        self.conversation_title = "New chat"
        self.context: list[ChatMessage] = []
        self.turn: Turn | None = None
        self._turn_ids = 0

    @property
    def config(self) -> Config:
        """The app's config (the engine's too, once it runs)."""
        return cast(PaneHost, self.app).config

    # --- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        """The conversation list on the left, the conversation on the right."""
        config = self.config
        self.discovering = config.network.discovery
        keymap = config.ui.keys
        short_keys = key_hints(
            keymap, [*self.BINDINGS, *ConversationList.BINDINGS, *PromptInput.BINDINGS]
        )
        yield ChatSidebar(short_keys, id="sidebar")
        with Vertical(id="conversation"):
            yield ModelBar(
                [*config.models, *config.local],
                config.ui.last_model,
                f"Switch model ({short_keys['pick-model']})",
                id="chat-toolbar",
            )
            yield ChatSettings(id="chat-settings")
            yield EmptyState(
                cast(PaneHost, self.app).paths.config_file,
                key_hints(keymap, [*self.BINDINGS, *PromptInput.BINDINGS], spelled_out=True),
                searching=self.discovering,
                discovery=config.network.discovery,
                id="empty-state",
            )
            yield ChatLog(id="chat-log")
            yield Static("", id="chat-note", markup=False)
            yield PromptInput(id="prompt", placeholder="Message the model · Enter sends")

    def on_mount(self) -> None:
        """Show the starting model (or how to add one); use the engine if built with one."""
        self._show_model(self.current_model)
        if self.engine is not None:  # built with a started engine
            self.call_later(self.watch_engine, self.engine)

    # --- the engine and its events -----------------------------------------------------------

    async def watch_engine(self, engine: Engine | None) -> None:
        """Start using the engine: its model list and the saved conversations."""
        if engine is None:
            return
        self.engine_ready.set()
        self.query_one(ModelBar).names = tuple(entry.name for entry in engine.list_models())
        await self.refresh_conversations()

    @on(EventReceived)
    async def _event_received(self, event: EventReceived) -> None:
        from muxtui.engine.events import ChatFinished, ModelsChanged

        data = event.data
        if event.turn_id:
            turn = self.turn
            if turn is not None and turn.turn_id == event.turn_id:  # else a turn left behind
                if isinstance(data, ChatFinished):
                    self._end_turn()
                    self.context.append(chat_message("assistant", data.text))
                await turn.show(data)
        elif isinstance(data, ModelsChanged):
            self.query_one(ModelBar).names = data.names
        elif isinstance(data, DiscoveryFinished):
            self.discovering = False
            self.query_one(EmptyState).searching = False
        elif isinstance(data, EngineFailed):
            self.engine_error = data.error
            self.engine_ready.set()
            self._note(f"muxtui could not start its engine: {data.error}")

    @property
    def current_model(self) -> str:
        """The model the next turn goes to; empty when there is none."""
        return self.query_one(ModelBar).model

    @on(ModelBar.Changed)
    def _model_changed(self, event: ModelBar.Changed) -> None:
        self._show_model(event.model)
        if event.picked:
            self.post_message(ChoiceMade("last_model", event.model))
            self.query_one(PromptInput).focus()

    def _show_model(self, model: str) -> None:
        guide = self.query_one(EmptyState)
        guide.searching = self.discovering
        guide.model = model
        self._show_log_or_guide()

    def _show_log_or_guide(self) -> None:
        log = self.query_one(ChatLog)
        empty = not log.children
        self.query_one(EmptyState).display = empty
        log.display = not empty

    async def refresh_conversations(self) -> None:
        """Reload the conversation list from history."""
        if self.engine is None:
            return
        conversations = await self.engine.history.list_conversations()
        await self.query_one(ChatSidebar).show_conversations(
            [(conversation.id, conversation.title) for conversation in conversations],
            self.conversation_id,
        )

    # --- model -------------------------------------------------------------------------------

    @on(ModelBar.PickRequested)
    async def action_pick_model(self) -> None:
        """Open the fuzzy model picker over every known model."""
        await self.engine_ready.wait()
        if self.engine is None:
            self._note(f"muxtui could not start its engine: {self.engine_error}")
            return
        # Read as the picker opens: it shows every model's state and place, wanted fresh.
        self.query_one(ModelBar).pick(self.engine.list_models())

    # --- conversations -----------------------------------------------------------------------

    async def action_focus_conversations(self) -> None:
        """Focus the conversation list (unfolding it on a narrow screen)."""
        await self.query_one(ChatSidebar).open()

    @on(ConversationList.Left)
    def _list_left(self) -> None:
        self.query_one(PromptInput).focus()

    def _leave_turn(self) -> None:
        """Stop a streaming reply because its conversation is being left; the worker stores it."""
        if self.turn is not None:
            self.turn = None
            self.workers.cancel_group(self, "chat")
            self.refresh_bindings()

    async def action_new_chat(self) -> None:
        """Start a new, not yet saved conversation."""
        self._leave_turn()
        self.conversation_id = None
        self.context = []
        self._set_title("New chat")
        await self.query_one(ChatLog).show_messages([])
        self._show_log_or_guide()
        for conversations in self.query(ConversationList):
            conversations.highlighted = None
        self._note("")
        self.query_one(PromptInput).focus()

    async def open_conversation(self, conversation_id: int) -> None:
        """Show a saved conversation and continue it."""
        if self.engine is None:
            return
        self._leave_turn()
        history = self.engine.history
        conversation = await history.get_conversation(conversation_id)
        if conversation is None:
            await self.refresh_conversations()
            return
        stored = await history.messages(conversation_id)
        self.conversation_id = conversation_id
        self._set_title(conversation.title or "Untitled")
        self.context = [m.as_chat() for m in stored if m.status != "error" and m.content]
        await self.query_one(ChatLog).show_messages([shown(m) for m in stored])
        self._show_log_or_guide()
        bar = self.query_one(ModelBar)
        if conversation.model in bar.names:
            bar.model = conversation.model
        self._note("")

    @on(OptionList.OptionSelected, "#conversations")
    async def _conversation_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id is not None:
            await self.open_conversation(int(event.option.id))
            self.query_one(PromptInput).focus()

    def action_rename_chat(self) -> None:
        """Rename the open conversation."""
        if (conversation_id := self._open_conversation_id()) is not None:
            self.query_one(ChatSidebar).ask_rename(conversation_id)

    def action_delete_chat(self) -> None:
        """Delete the open conversation (after asking)."""
        if (conversation_id := self._open_conversation_id()) is not None:
            self.query_one(ChatSidebar).ask_delete(conversation_id)

    def _open_conversation_id(self) -> int | None:
        if self.conversation_id is None:
            key = key_hint(self.config.ui.keys, self.BINDINGS, "focus-conversations")
            self.notify(f"No saved conversation is open: {key} picks one.", severity="warning")
        return self.conversation_id

    @on(ChatSidebar.RenameChosen)
    async def _rename_chosen(self, event: ChatSidebar.RenameChosen) -> None:
        if self.engine is not None:
            await self.engine.history.rename(event.conversation_id, event.title)
            if event.conversation_id == self.conversation_id:
                self._set_title(event.title)
            await self.refresh_conversations()

    @on(ChatSidebar.DeleteConfirmed)
    async def _delete_confirmed(self, event: ChatSidebar.DeleteConfirmed) -> None:
        if self.engine is not None:
            if event.conversation_id == self.conversation_id:
                await self.action_new_chat()
            await self.engine.history.delete(event.conversation_id)
            await self.refresh_conversations()

    def _set_title(self, title: str) -> None:
        self.conversation_title = title
        self.post_message(TitleChanged(title))

    # --- a turn ------------------------------------------------------------------------------

    @on(PromptInput.Submitted)
    async def _prompt_submitted(self, event: PromptInput.Submitted) -> None:
        event.stop()
        await self.send(event.text)

    async def send(self, text: str) -> None:
        """Send a prompt in the current conversation and stream the reply."""
        if not text.strip():
            self._note("Type a message first: Enter sends, Ctrl+J starts a new line.")
            return
        if self.turn is not None:
            self._note("A reply is still streaming: Esc stops it.")
            return
        if not self.current_model:
            self._note("No model to send to yet: add one as shown above, then start muxtui again.")
            return
        try:
            params = self.query_one(ChatSettings).chat_params()
        except ChatSettingsError as exc:
            self._note(str(exc))
            return
        await self.engine_ready.wait()
        if self.engine is None:
            self._note(f"muxtui could not start its engine: {self.engine_error}")
            return
        try:
            self.conversation_id, new_title = await record_prompt(
                self.engine, self.conversation_id, self.current_model, text
            )
        except Exception as exc:  # a broken history must not take the app down
            self._note(f"could not save the prompt to history ({describe(exc)}); not sent")
            return
        if new_title is not None:
            self._set_title(new_title)
        self._note("")
        self.query_one(PromptInput).clear()
        log = self.query_one(ChatLog)
        view = await log.add_exchange(text, self.current_model)
        self._show_log_or_guide()
        self.context.append(chat_message("user", text))
        system = self.query_one(ChatSettings).system_prompt
        messages = ([chat_message("system", system)] if system else []) + self.context
        self._turn_ids += 1
        self.turn = Turn(
            self._turn_ids, self.conversation_id, self.current_model, tuple(messages), params, view
        )
        self.refresh_bindings()
        self.stream_reply(self.turn)
        await self.refresh_conversations()

    @work(exclusive=True, group="chat", exit_on_error=False)
    async def stream_reply(self, turn: Turn) -> None:
        """Stream one reply from the engine; its events come back as messages."""
        assert self.engine is not None

        def warn(text: str) -> None:
            self.notify(text, title="history", severity="warning")

        await stream_turn(self.engine, turn, self.post_message, warn)

    @on(TurnEnded)
    async def _turn_ended(self, event: TurnEnded) -> None:
        turn = self.turn
        if turn is None or turn.turn_id != event.turn_id:
            return
        self._end_turn()
        if event.status == "stopped":
            if turn.view.text:
                self.context.append(chat_message("assistant", turn.view.text))
            await turn.view.finish("stopped")
        else:
            await turn.view.finish("error", text=event.text, error=event.error)

    def _end_turn(self) -> None:
        self.turn = None
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Offer Stop only while a reply streams."""
        if action == "stop":
            return self.turn is not None
        return True

    def action_stop(self) -> None:
        """Stop the streaming reply; its partial text stays, marked as stopped."""
        if self.turn is None:
            self.notify("No reply is streaming.", severity="warning")
            return
        self.workers.cancel_group(self, "chat")

    def action_copy_reply(self) -> None:
        """Copy the last reply to the clipboard."""
        replies = [m.content for m in self.context if m.role == "assistant"]
        if self.turn is not None and self.turn.view.text:
            replies.append(self.turn.view.text)
        if not replies:
            self.notify("No reply to copy yet.", severity="warning")
            return
        self.app.copy_to_clipboard(replies[-1])
        self.notify(f"Copied the last reply ({len(replies[-1])} characters).")

    async def action_toggle_settings(self) -> None:
        """Open or close the settings; focus the system prompt when opening."""
        if not await self.query_one(ChatSettings).toggle():
            self.query_one(PromptInput).focus()

    def _note(self, text: str) -> None:
        note = self.query_one("#chat-note", Static)
        note.update(text)
        note.display = bool(text)
