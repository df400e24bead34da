"""One chat turn as the chat pane runs it: `Engine.run_turn`'s events, posted to the pane.

The engine records the turn (the conversation, the prompt, the reply and how it ended); the
pane only shows it. Cancelling the worker that runs `stream_turn` stops the reply, and the
engine stores it as stopped.
"""

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
    from muxtui.engine.events import ChatSettings
    from muxtui.tui.panes.chat.message_view import MessageView

EndStatus = Literal["stopped", "error", "truncated"]


@dataclass
class Turn:
    """One prompt and the reply streaming for it."""

    turn_id: int
    conversation_id: int | None  # None until the engine has started the conversation
    model: str
    prompt: str
    settings: ChatSettings
    view: MessageView
    started: bool = False  # the engine has recorded the prompt (`TurnStarted` came)
    loading_words: LoadingWords = field(default_factory=LoadingWords)

    async def show(self, event: object) -> None:
        """Show one event of the reply's stream in its view."""
        from muxtui.engine.events import ChatDelta, ChatStatus, ContextFitted

        if isinstance(event, ChatStatus):
            self.view.show_status(self.loading_words.describe(event.message))
        elif isinstance(event, ChatDelta):
            self.view.append(event.text)
        elif isinstance(event, ContextFitted):
            self.view.show_notice(event.notice)


class TurnEnded(Message):
    """A reply ended without completing: stopped, failed with `error`, or cut off (truncated)."""

    def __init__(self, turn_id: int, status: EndStatus, error: str = "", text: str = "") -> None:
        super().__init__()
        self.turn_id = turn_id
        self.status = status
        self.error = error
        self.text = text  # the partial reply


async def stream_turn(engine: Engine, turn: Turn, post: Callable[[Message], object]) -> None:
    """Run one recorded turn and post its events as `EventReceived`, then how it ended."""
    from muxtui.engine.errors import StreamInterruptedError, TruncatedReplyError
    from muxtui.engine.events import ChatDelta

    parts: list[str] = []
    try:
        turns = engine.run_turn(
            turn.model, turn.prompt, conversation_id=turn.conversation_id, settings=turn.settings
        )
        async for event in turns:
            if isinstance(event, ChatDelta):
                parts.append(event.text)
            post(EventReceived(event, turn.turn_id))
    except asyncio.CancelledError:
        post(TurnEnded(turn.turn_id, "stopped", text="".join(parts)))
        raise
    except Exception as exc:
        partial = exc.partial_text if isinstance(exc, StreamInterruptedError) else "".join(parts)
        status: EndStatus = "truncated" if isinstance(exc, TruncatedReplyError) else "error"
        post(TurnEnded(turn.turn_id, status, describe(exc), partial))
