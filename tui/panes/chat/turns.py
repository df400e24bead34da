"""One chat turn as the chat pane runs it: stream the reply, post its events, store how it ended."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from textual.message import Message

from muxtui.tui.bridge import EventReceived
from muxtui.tui.display import describe
from muxtui.tui.panes.chat.loading_words import LoadingWords

if TYPE_CHECKING:
    from muxtui.engine.core import Engine
    from muxtui.engine.events import ChatMessage, ChatParams, ChatStats
    from muxtui.engine.history import MessageStatus
    from muxtui.tui.panes.chat.message_view import MessageView


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
    loading_words: LoadingWords = field(default_factory=LoadingWords)

    async def show(self, event: object) -> None:
        """Show one event of the reply's stream in its view."""
        from muxtui.engine.events import ChatDelta, ChatFinished, ChatStatus

        if isinstance(event, ChatStatus):
            self.view.show_status(self.loading_words.describe(event.message))
        elif isinstance(event, ChatDelta):
            self.view.append(event.text)
        elif isinstance(event, ChatFinished):
            await self.view.finish("complete", text=event.text, stats=event.stats)


class TurnEnded(Message):
    """A reply ended without completing: stopped by the person, or failed with `error`."""

    def __init__(
        self, turn_id: int, status: Literal["stopped", "error"], error: str = "", text: str = ""
    ) -> None:
        super().__init__()
        self.turn_id = turn_id
        self.status = status
        self.error = error
        self.text = text


def chat_message(role: str, content: str) -> ChatMessage:
    """One message as sent to a model."""
    from muxtui.engine.events import ChatMessage

    return ChatMessage(role, content)


async def record_prompt(
    engine: Engine, conversation_id: int | None, model: str, text: str
) -> tuple[int, str | None]:
    """Store the prompt, starting a conversation if there is none; returns its id, new title."""
    from muxtui.engine.history import conversation_title

    history = engine.history
    title = None
    if conversation_id is None:
        conversation = await history.new_conversation(conversation_title(text), model)
        conversation_id, title = conversation.id, conversation.title
    else:
        await history.set_model(conversation_id, model)
    await history.add_message(conversation_id, "user", text)
    return conversation_id, title


async def stream_turn(
    engine: Engine,
    turn: Turn,
    post: Callable[[Message], object],
    warn: Callable[[str], None],
) -> None:
    """Stream one reply, post each event as `EventReceived`, and store how the reply ended."""
    from muxtui.engine.errors import StreamInterruptedError
    from muxtui.engine.events import ChatDelta, ChatFinished

    try:
        async for event in engine.chat(turn.model, turn.messages, turn.params):
            if isinstance(event, ChatDelta):
                turn.text_parts.append(event.text)
            elif isinstance(event, ChatFinished):
                turn.text_parts = [event.text]
                turn.stats = event.stats
            post(EventReceived(event, turn.turn_id))
    except asyncio.CancelledError:
        post(TurnEnded(turn.turn_id, "stopped"))
        # Shielded: the partial reply is stored even though this task is being cancelled.
        await asyncio.shield(store_reply(engine, turn, "stopped", "", warn))
        raise
    except Exception as exc:
        if isinstance(exc, StreamInterruptedError) and exc.partial_text:
            turn.text_parts = [exc.partial_text]
        error = describe(exc)
        post(TurnEnded(turn.turn_id, "error", error, "".join(turn.text_parts)))
        await store_reply(engine, turn, "error", error, warn)
        return
    await store_reply(engine, turn, "complete", "", warn)


async def store_reply(
    engine: Engine, turn: Turn, status: MessageStatus, error: str, warn: Callable[[str], None]
) -> None:
    """Save how a reply ended; a history failure is reported through `warn`, never raised."""
    try:
        await engine.history.add_message(
            turn.conversation_id,
            "assistant",
            "".join(turn.text_parts),
            model=turn.model,
            status=status,
            stats=turn.stats,
            error=error,
        )
    except Exception as exc:
        warn(f"could not save the reply to history: {describe(exc)}")
