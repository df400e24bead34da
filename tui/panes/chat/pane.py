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
from muxtui.tui.display import key_hint, key_hints
from muxtui.tui.panes import ChoiceMade, PaneHost, TitleChanged
from muxtui.tui.panes.chat.chat_log import ChatLog
from muxtui.tui.panes.chat.chat_settings import ChatSettings, ChatSettingsError
from muxtui.tui.panes.chat.conversation_list import ConversationList
from muxtui.tui.panes.chat.conversations import ConversationKeeper
from muxtui.tui.panes.chat.empty_state import EmptyState
from muxtui.tui.panes.chat.model_bar import ModelBar
from muxtui.tui.panes.chat.prompt_input import PromptInput
from muxtui.tui.panes.chat.sidebar import ChatSidebar
from muxtui.tui.panes.chat.turns import Turn, TurnEnded, stream_turn

if TYPE_CHECKING:
    from textual.timer import Timer

    from muxtui.engine.config import Config
    from muxtui.engine.core import Engine
    from muxtui.engine.events import ContextFitted

# Seconds after the last change to a setting before it is saved with the open conversation.
SAVE_SETTINGS_AFTER_S = 0.4


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
            tooltip="Pick a saved conversation (Enter opens, / filters, r renames, d deletes, "
            "e exports, Esc goes back)",
        ),
        Binding(
            "escape", "stop", "Stop", id="stop", tooltip="Stop the reply; the partial text stays"
        ),
        Binding("ctrl+r", "copy_reply", "Copy", id="copy-reply", tooltip="Copy the last reply"),
        # Priority, and the prompt focused at once: what is typed right after Enter lands in
        # the prompt while the conversation opens (a queued focus change would leave those keys
        # to the list, where r, d and e act on conversations).
        Binding(
            "enter",
            "open_highlighted",
            "Open",
            id="open-conversation",
            tooltip="Open the highlighted conversation",
            show=False,
            priority=True,
        ),
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
        self.turn: Turn | None = None
        self._turn_ids = 0
        self._save_timer: Timer | None = None

    @property
    def config(self) -> Config:
        """The app's config (the engine's too, once it runs)."""
        return cast(PaneHost, self.app).config

    @property
    def keeper(self) -> ConversationKeeper:
        """The conversation operations (the engine must have started)."""
        assert self.engine is not None
        return ConversationKeeper(self, self.engine)

    # --- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        """The conversation list on the left, the conversation on the right."""
        config = self.config
        self.discovering = config.network.discovery
        keymap = config.ui.keys
        bindings = [
            *self.BINDINGS,
            *ConversationList.BINDINGS,
            *ChatSidebar.BINDINGS,
            *PromptInput.BINDINGS,
        ]
        short_keys = key_hints(keymap, bindings)
        spelled = key_hints(keymap, bindings, spelled_out=True)
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
            log = ChatLog(id="chat-log")
            log.hints = (
                f"{spelled['scroll-up']} scrolls, {spelled['scroll-first']} goes to the first",
                f"{spelled['scroll-last']} goes to the newest",
            )
            yield log
            yield Static("", id="chat-note", markup=False)
            yield PromptInput(id="prompt", placeholder="Message the model · Enter sends")

    def on_mount(self) -> None:
        """Show the starting model (or how to add one); use the engine if built with one."""
        self._show_model(self.current_model)
        if self.engine is not None:  # built with a started engine
            self.call_later(self.watch_engine, self.engine)

    # --- the engine and its events -----------------------------------------------------------

    async def watch_engine(self, engine: Engine | None) -> None:
        """Start using the engine: its model list, its default model, the saved conversations."""
        if engine is None:
            return
        self.engine_ready.set()
        self.query_one(ModelBar).names = tuple(entry.name for entry in engine.list_models())
        self._choose_default_model(engine)
        await self.refresh_conversations()

    @work(group="default-model", exit_on_error=False)
    async def _choose_default_model(self, engine: Engine) -> None:
        """Start on the engine's default model (never one that failed or cannot run here)."""
        choice = await engine.default_model()
        if choice is not None and self.conversation_id is None and self.turn is None:
            self.query_one(ModelBar).offer_default(choice.name, choice.reason)

    @on(EventReceived)
    async def _event_received(self, event: EventReceived) -> None:
        from muxtui.engine.events import ChatFinished, ContextFitted, ModelsChanged, TurnStarted

        data = event.data
        if event.turn_id:
            turn = self.turn
            if turn is None or turn.turn_id != event.turn_id:
                return  # a turn left behind
            if isinstance(data, TurnStarted):
                turn.started = True
                turn.conversation_id = self.conversation_id = data.conversation_id
                if data.new_conversation:
                    self.set_title(data.title)
                await self.refresh_conversations()
            elif isinstance(data, ChatFinished):
                from muxtui.tui.panes.chat.message_view import ShownMessage

                self._end_turn()
                reply = ShownMessage(
                    "assistant",
                    data.text,
                    turn.model,
                    stats=data.stats,
                    finish_reason=data.finish_reason,
                )
                await self.query_one(ChatLog).finish_live(reply)
            else:
                if isinstance(data, ContextFitted):
                    self._show_context(data)
                await turn.show(data)
        elif isinstance(data, ModelsChanged):
            self.query_one(ModelBar).names = data.names
        elif isinstance(data, DiscoveryFinished):
            self.discovering = False
            self.query_one(EmptyState).searching = False
        elif isinstance(data, EngineFailed):
            self.engine_error = data.error
            self.engine_ready.set()
            self.note(f"muxtui could not start its engine: {data.error}")

    def _show_context(self, fitted: ContextFitted | None) -> None:
        """Show how full the model's window was on the last turn (nothing when unknown)."""
        bar = self.query_one(ModelBar)
        if fitted is None or fitted.fill is None or not fitted.limit:
            bar.context = None
            return
        counted = "" if fitted.counted_by == "tokenizer" else " (estimated)"
        figures = f"{fitted.sent_tokens:,} of {fitted.limit:,} tokens{counted}"
        bar.context = (fitted.fill, figures)

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
        self.show_log_or_guide()

    def show_log_or_guide(self) -> None:
        """Show the conversation, or the empty chat's guide when it has no messages."""
        log = self.query_one(ChatLog)
        empty = not log.messages
        self.query_one(EmptyState).display = empty
        log.display = not empty

    async def refresh_conversations(self) -> None:
        """Reload the conversation list (filtered, while the filter has text)."""
        if self.engine is not None:
            await self.keeper.show_list(self.query_one(ChatSidebar).filter_text)

    # --- model -------------------------------------------------------------------------------

    @on(ModelBar.PickRequested)
    async def action_pick_model(self) -> None:
        """Open the fuzzy model picker over every known model."""
        await self.engine_ready.wait()
        if self.engine is None:
            self.note(f"muxtui could not start its engine: {self.engine_error}")
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
        """Stop a streaming reply because its conversation is being left; the engine stores it."""
        if self.turn is not None:
            self.turn = None
            self.workers.cancel_group(self, "chat")
            self.refresh_bindings()

    async def action_new_chat(self) -> None:
        """Start a new, not yet saved conversation (with the settings on screen)."""
        self._leave_turn()
        self.workers.cancel_group(self, "open-conversation")
        self.conversation_id = None
        self.set_title("New chat")
        self._show_context(None)
        await self.query_one(ChatLog).show_messages([])
        self.show_log_or_guide()
        for conversations in self.query(ConversationList):
            conversations.highlighted = None
        self.note("")
        self.query_one(PromptInput).focus()

    async def open_conversation(self, conversation_id: int) -> None:
        """Show a saved conversation from its newest message, and continue it."""
        if self.engine is not None:
            self._leave_turn()
            await self.keeper.open(conversation_id)

    @work(exclusive=True, group="open-conversation", exit_on_error=False)
    async def _open_in_background(self, conversation_id: int) -> None:
        await self.open_conversation(conversation_id)

    def action_open_highlighted(self) -> None:
        """Open the conversation under the list's cursor; the prompt takes the focus now."""
        conversation_id = self.query_one(ConversationList).highlighted_id
        if conversation_id is not None:
            self._open_from_list(conversation_id)

    @on(OptionList.OptionSelected, "#conversations")
    def _conversation_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()  # a click; Enter comes through `action_open_highlighted`
        if event.option.id is not None:
            self._open_from_list(int(event.option.id))

    def _open_from_list(self, conversation_id: int) -> None:
        # What is typed while the conversation opens (in a worker, a few messages at a time)
        # lands in the prompt.
        # The worker first: its reads of the history start while the focus change is drawn.
        self._open_in_background(conversation_id)
        self.screen.set_focus(self.query_one(PromptInput))

    def action_rename_chat(self) -> None:
        """Rename the open conversation."""
        if (conversation_id := self._open_conversation_id()) is not None:
            self.query_one(ChatSidebar).ask_rename(conversation_id, self.conversation_title)

    def action_delete_chat(self) -> None:
        """Delete the open conversation (after asking)."""
        if (conversation_id := self._open_conversation_id()) is not None:
            self.query_one(ChatSidebar).ask_delete(conversation_id, self.conversation_title)

    def action_export_chat(self) -> None:
        """Export the open conversation to a Markdown file."""
        if (conversation_id := self._open_conversation_id()) is not None:
            self.keeper.export(conversation_id)

    def _open_conversation_id(self) -> int | None:
        if self.conversation_id is None:
            key = key_hint(self.config.ui.keys, self.BINDINGS, "focus-conversations")
            self.notify(f"No saved conversation is open: {key} picks one.", severity="warning")
        return self.conversation_id

    @on(ConversationList.Requested)
    def _list_requested(self, event: ConversationList.Requested) -> None:
        if event.what == "export" and self.engine is not None:
            event.stop()
            self.keeper.export(event.conversation_id)

    @on(ChatSidebar.FilterChanged)
    def _filter_changed(self) -> None:
        self._refresh_in_background()

    @work(exclusive=True, group="conversation-list", exit_on_error=False)
    async def _refresh_in_background(self) -> None:
        await self.refresh_conversations()

    @on(ChatSidebar.RenameChosen)
    async def _rename_chosen(self, event: ChatSidebar.RenameChosen) -> None:
        if self.engine is not None:
            await self.keeper.rename(event.conversation_id, event.title)

    @on(ChatSidebar.DeleteConfirmed)
    async def _delete_confirmed(self, event: ChatSidebar.DeleteConfirmed) -> None:
        if self.engine is not None:
            if event.conversation_id == self.conversation_id:
                await self.action_new_chat()
            await self.keeper.delete(event.conversation_id)

    def set_title(self, title: str) -> None:
        """Show the open conversation's title (in the header)."""
        self.conversation_title = title
        self.post_message(TitleChanged(title))

    @on(ChatSettings.Changed)
    def _settings_changed(self) -> None:
        """Keep changed settings with the open conversation, once the typing pauses."""
        if self._save_timer is not None:
            self._save_timer.stop()
        if self.conversation_id is not None and self.engine is not None:
            conversation_id = self.conversation_id
            self._save_timer = self.set_timer(
                SAVE_SETTINGS_AFTER_S, lambda: self.keeper.save_settings(conversation_id)
            )

    # --- a turn ------------------------------------------------------------------------------

    @on(PromptInput.Submitted)
    async def _prompt_submitted(self, event: PromptInput.Submitted) -> None:
        event.stop()
        await self.send(event.text)

    @on(PromptInput.ScrollRequested)
    async def _scroll_requested(self, event: PromptInput.ScrollRequested) -> None:
        event.stop()
        log = self.query_one(ChatLog)
        if event.edge == "first":
            await log.show_first()
        elif event.edge == "last":
            await log.show_last()
        else:
            log.scroll_pages(event.pages)

    async def send(self, text: str) -> None:
        """Send a prompt in the current conversation and stream the reply."""
        if not text.strip():
            self.note("Type a message first: Enter sends, Ctrl+J starts a new line.")
            return
        if self.turn is not None:
            self.note("A reply is still streaming: Esc stops it.")
            return
        if not self.current_model:
            self.note("No model to send to yet: add one as shown above, then start muxtui again.")
            return
        try:
            settings = self.query_one(ChatSettings).settings()
        except ChatSettingsError as exc:
            self.note(str(exc))
            return
        await self.engine_ready.wait()
        if self.engine is None:
            self.note(f"muxtui could not start its engine: {self.engine_error}")
            return
        self.note("")
        self.query_one(PromptInput).clear()
        view = await self.query_one(ChatLog).add_exchange(text, self.current_model)
        self.show_log_or_guide()
        self._turn_ids += 1
        self.turn = Turn(
            self._turn_ids, self.conversation_id, self.current_model, text, settings, view
        )
        self.refresh_bindings()
        self.stream_reply(self.turn)

    @work(exclusive=True, group="chat", exit_on_error=False)
    async def stream_reply(self, turn: Turn) -> None:
        """Run one turn through the engine; its events come back as messages."""
        assert self.engine is not None
        await stream_turn(self.engine, turn, self.post_message)

    @on(TurnEnded)
    async def _turn_ended(self, event: TurnEnded) -> None:
        from muxtui.tui.panes.chat.message_view import ShownMessage

        turn = self.turn
        if turn is None or turn.turn_id != event.turn_id:
            return
        self._end_turn()
        log = self.query_one(ChatLog)
        if not turn.started and event.status == "error":
            # Refused before anything was recorded (an unknown model, a broken history): the
            # prompt goes back into the box instead of standing in the log unanswered.
            await log.drop_exchange()
            self.show_log_or_guide()
            prompt = self.query_one(PromptInput)
            if not prompt.text:
                prompt.insert(turn.prompt)
            self.note(f"Not sent: {event.error}")
            return
        reply = ShownMessage("assistant", event.text, turn.model, event.status, error=event.error)
        await log.finish_live(reply)

    def _end_turn(self) -> None:
        self.turn = None
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Offer Stop only while a reply streams, and Enter opens only from the list."""
        if action == "stop":
            return self.turn is not None
        if action == "open_highlighted":
            return isinstance(self.screen.focused, ConversationList)
        return True

    def action_stop(self) -> None:
        """Stop the streaming reply; the engine keeps its partial text, marked as stopped."""
        if self.turn is None:
            self.notify("No reply is streaming.", severity="warning")
            return
        self.workers.cancel_group(self, "chat")

    def action_copy_reply(self) -> None:
        """Copy the last reply to the clipboard."""
        text = self.turn.view.text if self.turn is not None else ""
        if not text:
            replies = self.query_one(ChatLog).messages
            text = next((m.content for m in reversed(replies) if m.role == "assistant"), "")
        if not text:
            self.notify("No reply to copy yet.", severity="warning")
            return
        self.app.copy_to_clipboard(text)
        self.notify(f"Copied the last reply ({len(text)} characters).")

    async def action_toggle_settings(self) -> None:
        """Open or close the settings; focus the system prompt when opening."""
        if not await self.query_one(ChatSettings).toggle():
            self.query_one(PromptInput).focus()

    def note(self, text: str) -> None:
        """Say something about the prompt under the log (empty: nothing)."""
        note = self.query_one("#chat-note", Static)
        note.update(text)
        note.display = bool(text)
