"""The one bridge from engine events (plain dataclasses) to Textual messages, past-tense named."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from textual.message import Message

if TYPE_CHECKING:
    from textual.message_pump import MessagePump

    from muxtui.engine.events import ChatStats, ServerState

# `engine.events` (a dozen dataclasses, ~10 ms) is imported where events are translated: the
# first frame needs none of it.


class EngineStarted(Message):
    """The engine opened its history and began discovery; panes may now query it."""


class EngineFailed(Message):
    """The engine could not start; `error` says why and what to do."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class DiscoveryFinished(Message):
    """The engine's background search for models ended (or took too long to wait for)."""


class ServerStateUpdated(Message):
    """A local model server moved from one state to another."""

    def __init__(self, model: str, state: ServerState, previous: ServerState, detail: str) -> None:
        super().__init__()
        self.model = model
        self.state = state
        self.previous = previous
        self.detail = detail


class ModelsUpdated(Message):
    """The set of known models changed (discovery finished, config reloaded)."""

    def __init__(self, names: tuple[str, ...]) -> None:
        super().__init__()
        self.names = names


class StatusReported(Message):
    """Progress of a chat turn before its first token, e.g. a local server loading."""

    def __init__(self, turn_id: int, status: str) -> None:
        super().__init__()
        self.turn_id = turn_id
        self.status = status


class DeltaReceived(Message):
    """A piece of reply text arrived."""

    def __init__(self, turn_id: int, text: str) -> None:
        super().__init__()
        self.turn_id = turn_id
        self.text = text


class ReplyFinished(Message):
    """A reply completed; `text` is all of it."""

    def __init__(self, turn_id: int, text: str, stats: ChatStats, finish_reason: str) -> None:
        super().__init__()
        self.turn_id = turn_id
        self.text = text
        self.stats = stats
        self.finish_reason = finish_reason


class ReplyStopped(Message):
    """A reply was stopped by the person before it completed."""

    def __init__(self, turn_id: int) -> None:
        super().__init__()
        self.turn_id = turn_id


class ReplyFailed(Message):
    """A reply ended in an error; `error` is one line naming the problem and the fix."""

    def __init__(self, turn_id: int, error: str, partial_text: str = "") -> None:
        super().__init__()
        self.turn_id = turn_id
        self.error = error
        self.partial_text = partial_text


def chat_message(turn_id: int, event: object) -> Message | None:
    """The Textual message for one event of a chat turn's stream, or None if it has none."""
    from muxtui.engine.events import ChatDelta, ChatFinished, ChatStatus

    if isinstance(event, ChatDelta):
        return DeltaReceived(turn_id, event.text)
    if isinstance(event, ChatStatus):
        return StatusReported(turn_id, event.message)
    if isinstance(event, ChatFinished):
        return ReplyFinished(turn_id, event.text, event.stats, event.finish_reason)
    return None


def engine_message(event: object) -> Message | None:
    """The Textual message for one event the engine broadcasts to its listeners."""
    from muxtui.engine.events import ModelsChanged, ServerStateChanged

    if isinstance(event, ServerStateChanged):
        return ServerStateUpdated(event.model, event.state, event.previous, event.detail)
    if isinstance(event, ModelsChanged):
        return ModelsUpdated(event.names)
    return None


class EngineBridge:
    """Listens to the engine and posts each event, as a Textual message, to one target."""

    def __init__(self, target: MessagePump) -> None:
        self._target = target
        self._unsubscribe: Callable[[], None] | None = None

    def attach(self, engine: Any) -> None:
        """Start listening to `engine` (anything with `add_listener`)."""
        self.detach()
        self._unsubscribe = engine.add_listener(self.on_engine_event)

    def detach(self) -> None:
        """Stop listening."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def on_engine_event(self, event: object) -> None:
        """Translate one engine event and post it; safe to call from any thread."""
        message = engine_message(event)
        if message is not None:
            self._target.post_message(message)
