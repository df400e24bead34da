"""The chat pane: conversations, model picker, settings, the streamed log and the prompt."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Label, OptionList, Static

from muxtui.engine.config import Config
from muxtui.tui.bridge import (
    DeltaReceived,
    ReplyFailed,
    ReplyFinished,
    ReplyStopped,
    StatusReported,
    chat_message,
)
from muxtui.tui.display import describe, key_hint
from muxtui.tui.widgets.chat_log import ChatLog
from muxtui.tui.widgets.chat_settings import ChatSettings, ChatSettingsError
from muxtui.tui.widgets.conversation_list import ConversationList
from muxtui.tui.widgets.empty_state import EmptyState
from muxtui.tui.widgets.prompt_input import PromptInput

if TYPE_CHECKING:
    from muxtui.engine.core import Engine
    from muxtui.engine.events import ChatMessage, ChatParams, ChatStats, ModelEntry
    from muxtui.engine.history import MessageStatus, StoredMessage
    from muxtui.tui.widgets.message_view import MessageView, ShownMessage


def configured_models(config: Config) -> list[ModelEntry]:
    """The models named in the config, known before the engine has started."""
    from muxtui.engine.catalog import configured_entries
    from muxtui.engine.events import ModelEntry, ServerState

    entries = configured_entries(config)
    entries += [
        ModelEntry(name, "local", True, ServerState.COLD, path=local.path, pinned=local.pin)
        for name, local in config.local.items()
    ]
    return entries


def configured_model_names(config: Config) -> list[str]:
    """The names of `configured_models(config)`, without building the entries."""
    return [*config.models, *config.local]


def shown(message: StoredMessage) -> ShownMessage:
    """How a stored message is displayed."""
    from muxtui.tui.widgets.message_view import ShownMessage

    return ShownMessage(
        message.role, message.content, message.model, message.status, message.stats, message.error
    )


@dataclass
class Turn:
    """One prompt and the reply streaming for it."""

    turn_id: int
    conversation_id: int
    model: str
    messages: tuple[ChatMessage, ...]
    params: ChatParams
    view: MessageView
    text_parts: list[str] = field(default_factory=list)
    stats: ChatStats | None = None


class ChatPane(Horizontal):
    """Chat with any known model; replies stream in as Markdown and can be stopped with Esc."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+n", "new_chat", "New chat", id="new-chat", tooltip="Start a new chat"),
        Binding(
            "ctrl+o", "pick_model", "Model", id="pick-model", tooltip="Switch model (fuzzy search)"
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

    class ModelChosen(Message):
        """The person picked a model; the app remembers it as the last used."""

        def __init__(self, model: str) -> None:
            super().__init__()
            self.model = model

    def __init__(self, config: Config, config_file: Path, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.config = config
        self.config_file = config_file
        self.engine: Engine | None = None
        self.engine_error = ""
        self.engine_ready = asyncio.Event()
        # Built on first use: the first frame needs only the names (`configured_model_names`),
        # and the entries would import `engine.events` before it.
        self._models: list[ModelEntry] | None = None
        self.discovering = config.network.discovery
        self.current_model = ""
        self.conversation_id: int | None = None
        self.conversation_title = "New chat"
        self.context: list[ChatMessage] = []
        self.turn: Turn | None = None
        self._turn_ids = 0

    @property
    def models(self) -> list[ModelEntry]:
        """The known models: from the config until the engine has started, then the engine's."""
        if self._models is None:
            self._models = configured_models(self.config)
        return self._models

    @models.setter
    def models(self, entries: list[ModelEntry]) -> None:
        self._models = entries

    # --- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        """The conversation list on the left, the conversation on the right."""
        with Vertical(id="sidebar"):
            yield Label("Conversations", classes="section-title")
            yield ConversationList(id="conversations")
            keys, lists = self.config.ui.keys, ConversationList.BINDINGS
            yield Label(
                f"{key_hint(keys, self.BINDINGS, 'new-chat')} new · "
                f"{key_hint(keys, lists, 'rename-chat')} rename · "
                f"{key_hint(keys, lists, 'delete-chat')} delete",
                classes="hint",
            )
        with Vertical(id="conversation"):
            with Horizontal(id="chat-toolbar"):
                yield Label("Model", classes="toolbar-label")
                yield Button("", id="model-button", compact=True, tooltip="Switch model (^o)")
            yield ChatSettings(id="chat-settings")
            yield EmptyState(
                self.config_file,
                searching=self.discovering,
                discovery=self.config.network.discovery,
                id="empty-state",
            )
            yield ChatLog(id="chat-log")
            yield Static("", id="chat-note", markup=False)
            yield PromptInput(
                id="prompt", placeholder="Message the model · Enter sends · Ctrl+J new line"
            )

    def on_mount(self) -> None:
        """Pick the starting model from what the config names."""
        self._choose_name(configured_model_names(self.config))

    # --- the engine --------------------------------------------------------------------------

    async def use_engine(self, engine: Engine) -> None:
        """Start using the engine: real model list and saved conversations."""
        self.engine = engine
        self.engine_ready.set()
        self.refresh_models()
        await self.refresh_conversations()

    def engine_failed(self, error: str) -> None:
        """The engine could not start: say so where the next reply would appear."""
        self.engine_error = error
        self.engine_ready.set()
        self._note(f"muxtui could not start its engine: {error}")

    def refresh_models(self) -> None:
        """Re-read the known models from the engine and keep a sensible current one."""
        if self.engine is not None:
            self.models = list(self.engine.list_models())
        self._choose_model(self.models)

    def _choose_model(self, entries: Sequence[ModelEntry]) -> None:
        self._choose_name([entry.name for entry in entries])

    def _choose_name(self, names: list[str]) -> None:
        if self.current_model not in names:
            last = self.config.ui.last_model
            self.current_model = last if last in names else (names[0] if names else "")
        button = self.query_one("#model-button", Button)
        button.label = f"{self.current_model} ▾" if self.current_model else "no model ▾"
        button.refresh(layout=True)  # the label's width changed
        has_models = bool(names)
        empty_state = self.query_one(EmptyState)
        empty_state.display = not has_models
        if not has_models and empty_state.searching != self.discovering:
            empty_state.show(searching=self.discovering)
        self.query_one(ChatLog).display = has_models

    def discovery_finished(self) -> None:
        """Discovery is over: with still no model, show how to add one."""
        self.discovering = False
        self.refresh_models()

    async def refresh_conversations(self) -> None:
        """Reload the conversation list from history."""
        if self.engine is None:
            return
        conversations = await self.engine.history.list_conversations()
        self.query_one(ConversationList).show_conversations(
            [(conversation.id, conversation.title) for conversation in conversations],
            self.conversation_id,
        )

    # --- model -------------------------------------------------------------------------------

    def set_model(self, name: str) -> None:
        """Switch the model for the next turns and remember it as the last used."""
        self.current_model = name
        self._choose_model(self.models)
        self.post_message(self.ModelChosen(name))

    def action_pick_model(self) -> None:
        """Open the fuzzy model picker."""
        from muxtui.tui.screens import ModelPickerScreen

        self.refresh_models()

        def picked(name: str | None) -> None:
            if name:
                self.set_model(name)
            self.query_one(PromptInput).focus()

        self.app.push_screen(ModelPickerScreen(self.models, self.current_model), picked)

    @on(Button.Pressed, "#model-button")
    def _model_button_pressed(self) -> None:
        self.action_pick_model()

    # --- conversations -----------------------------------------------------------------------

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
        self.query_one(ConversationList).highlighted = None
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
        if conversation.model and conversation.model in {entry.name for entry in self.models}:
            self.current_model = conversation.model
            self._choose_model(self.models)
        self._note("")

    @on(OptionList.OptionSelected, "#conversations")
    async def _conversation_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id is not None:
            await self.open_conversation(int(event.option.id))
            self.query_one(PromptInput).focus()

    @on(ConversationList.RenameRequested)
    def _rename_requested(self, event: ConversationList.RenameRequested) -> None:
        from muxtui.tui.screens import TextPromptScreen

        conversation_id = event.conversation_id
        option = self.query_one(ConversationList).get_option(str(conversation_id))

        async def renamed(title: str | None) -> None:
            if title and self.engine is not None:
                await self.engine.history.rename(conversation_id, title)
                if conversation_id == self.conversation_id:
                    self._set_title(title)
                await self.refresh_conversations()

        self.app.push_screen(TextPromptScreen("Rename conversation", str(option.prompt)), renamed)

    @on(ConversationList.DeleteRequested)
    def _delete_requested(self, event: ConversationList.DeleteRequested) -> None:
        from muxtui.tui.screens import ConfirmScreen

        conversation_id = event.conversation_id
        option = self.query_one(ConversationList).get_option(str(conversation_id))

        async def confirmed(yes: bool | None) -> None:
            if yes and self.engine is not None:
                if conversation_id == self.conversation_id:
                    await self.action_new_chat()
                await self.engine.history.delete(conversation_id)
                await self.refresh_conversations()

        self.app.push_screen(ConfirmScreen(f"Delete “{option.prompt}”?"), confirmed)

    def _set_title(self, title: str) -> None:
        self.conversation_title = title
        self.app.sub_title = title

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
        from muxtui.engine.events import ChatMessage
        from muxtui.engine.history import conversation_title as title_from_prompt
        from muxtui.tui.widgets.message_view import ShownMessage

        history = self.engine.history
        try:
            if self.conversation_id is None:
                conversation = await history.new_conversation(
                    title_from_prompt(text), self.current_model
                )
                self.conversation_id = conversation.id
                self._set_title(conversation.title)
            else:
                await history.set_model(self.conversation_id, self.current_model)
            await history.add_message(self.conversation_id, "user", text)
        except Exception as exc:  # a broken history must not take the app down
            self._note(f"could not save the prompt to history ({describe(exc)}); not sent")
            return
        self._note("")
        self.query_one(PromptInput).clear()
        log = self.query_one(ChatLog)
        await log.add_message(ShownMessage("user", text))
        view = await log.add_message(
            ShownMessage("assistant", "", self.current_model, status="streaming")
        )
        log.anchor()
        self.context.append(ChatMessage("user", text))
        system = self.query_one(ChatSettings).system_prompt
        messages = ([ChatMessage("system", system)] if system else []) + self.context
        self._turn_ids += 1
        self.turn = Turn(
            self._turn_ids, self.conversation_id, self.current_model, tuple(messages), params, view
        )
        self.refresh_bindings()
        self.stream_reply(self.turn)
        await self.refresh_conversations()

    @work(exclusive=True, group="chat", exit_on_error=False)
    async def stream_reply(self, turn: Turn) -> None:
        """Stream one reply from the engine, post it as messages, and store how it ended."""
        from muxtui.engine.errors import StreamInterruptedError
        from muxtui.engine.events import ChatDelta, ChatFinished

        assert self.engine is not None
        engine = self.engine
        try:
            async for event in engine.chat(turn.model, turn.messages, turn.params):
                if isinstance(event, ChatDelta):
                    turn.text_parts.append(event.text)
                elif isinstance(event, ChatFinished):
                    turn.text_parts = [event.text]
                    turn.stats = event.stats
                message = chat_message(turn.turn_id, event)
                if message is not None:
                    self.post_message(message)
        except asyncio.CancelledError:
            self.post_message(ReplyStopped(turn.turn_id))
            # Shielded: the partial reply is stored even though this task is being cancelled.
            await asyncio.shield(self._store_reply(turn, "stopped"))
            raise
        except Exception as exc:
            if isinstance(exc, StreamInterruptedError) and exc.partial_text:
                turn.text_parts = [exc.partial_text]
            error = describe(exc)
            self.post_message(ReplyFailed(turn.turn_id, error, "".join(turn.text_parts)))
            await self._store_reply(turn, "error", error)
            return
        await self._store_reply(turn, "complete")

    async def _store_reply(self, turn: Turn, status: MessageStatus, error: str = "") -> None:
        """Save how a reply ended; a history failure is reported, never raised."""
        assert self.engine is not None
        try:
            await self.engine.history.add_message(
                turn.conversation_id,
                "assistant",
                "".join(turn.text_parts),
                model=turn.model,
                status=status,
                stats=turn.stats,
                error=error,
            )
        except Exception as exc:
            self.app.notify(
                f"could not save the reply to history: {describe(exc)}",
                title="history",
                severity="warning",
            )

    def _current_turn(self, turn_id: int) -> Turn | None:
        turn = self.turn
        return turn if turn is not None and turn.turn_id == turn_id else None

    @on(StatusReported)
    def _status_reported(self, event: StatusReported) -> None:
        if turn := self._current_turn(event.turn_id):
            turn.view.show_status(event.status)

    @on(DeltaReceived)
    def _delta_received(self, event: DeltaReceived) -> None:
        if turn := self._current_turn(event.turn_id):
            turn.view.append(event.text)

    @on(ReplyFinished)
    async def _reply_finished(self, event: ReplyFinished) -> None:
        from muxtui.engine.events import ChatMessage

        if turn := self._end_turn(event.turn_id):
            self.context.append(ChatMessage("assistant", event.text))
            await turn.view.finish("complete", text=event.text, stats=event.stats)

    @on(ReplyStopped)
    async def _reply_stopped(self, event: ReplyStopped) -> None:
        from muxtui.engine.events import ChatMessage

        if turn := self._end_turn(event.turn_id):
            if turn.view.text:
                self.context.append(ChatMessage("assistant", turn.view.text))
            await turn.view.finish("stopped")

    @on(ReplyFailed)
    async def _reply_failed(self, event: ReplyFailed) -> None:
        if turn := self._end_turn(event.turn_id):
            await turn.view.finish("error", text=event.partial_text, error=event.error)

    def _end_turn(self, turn_id: int) -> Turn | None:
        turn = self._current_turn(turn_id)
        if turn is not None:
            self.turn = None
            self.refresh_bindings()
        return turn

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Offer Stop only while a reply streams."""
        if action == "stop":
            return self.turn is not None
        return True

    def action_stop(self) -> None:
        """Stop the streaming reply; its partial text stays, marked as stopped."""
        if self.turn is not None:
            self.workers.cancel_group(self, "chat")

    def action_copy_reply(self) -> None:
        """Copy the last reply to the clipboard."""
        replies = [m.content for m in self.context if m.role == "assistant"]
        if self.turn is not None and self.turn.view.text:
            replies.append(self.turn.view.text)
        if not replies:
            self.app.notify("No reply to copy yet.", severity="warning")
            return
        self.app.copy_to_clipboard(replies[-1])
        self.app.notify(f"Copied the last reply ({len(replies[-1])} characters).")

    async def action_toggle_settings(self) -> None:
        """Open or close the settings; focus the system prompt when opening."""
        settings = self.query_one(ChatSettings)
        if settings.collapsed:
            await settings.open()
        else:
            settings.collapsed = True
            self.query_one(PromptInput).focus()

    def _note(self, text: str) -> None:
        note = self.query_one("#chat-note", Static)
        note.update(text)
        note.display = bool(text)
