"""The one bridge from engine events (frozen dataclasses) to Textual messages.

`EventReceived` carries any engine event unchanged in `data`; handlers match on its type and use
its fields, so no event's fields are declared twice. `EngineFailed` and `DiscoveryFinished` are
the app's own news about the engine, delivered the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual.message import Message

if TYPE_CHECKING:
    from textual.message_pump import MessagePump

# `engine.events` (a dozen dataclasses, ~10 ms) is not imported here: the first frame needs none
# of it, and the bridge passes events through without looking inside.


@dataclass(frozen=True)
class EngineFailed:
    """The engine could not start; `error` says why and what to do."""

    error: str


@dataclass(frozen=True)
class DiscoveryFinished:
    """The engine's background search for models ended (or took too long to wait for)."""


class EventReceived(Message, bubble=False):
    """An engine event arrived; `data` is the event itself (e.g. a `ServerStateChanged`).

    `turn_id` ties the events of one chat turn's stream to that turn; 0 for broadcast events.
    It does not bubble: the app forwards it to each pane, and a pane to no one.
    """

    def __init__(self, data: object, turn_id: int = 0) -> None:
        super().__init__()
        self.data = data
        self.turn_id = turn_id


class EngineStarted(Message):
    """The engine opened its history and began discovery; panes may now use it."""


class EngineBridge:
    """Listens to the engine and posts each event, as `EventReceived`, to one target."""

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
        """Post one engine event to the target; safe to call from any thread."""
        self._target.post_message(EventReceived(event))
