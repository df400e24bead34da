"""One chat turn, recorded: the conversation, the prompt, the streamed reply and how it ended.

`Engine.run_turn` is the door; `Turns` does the work with the history, the engine's `chat`
stream, its model check and the secrets it must keep out of the history.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

from muxtui.engine.errors import (
    MuxtuiError,
    StreamInterruptedError,
    TruncatedReplyError,
    UsageError,
)
from muxtui.engine.events import (
    ChatDelta,
    ChatEvent,
    ChatFinished,
    ChatMessage,
    ChatParams,
    ChatSettings,
    ChatStats,
    MessageStatus,
    StoredMessage,
    TurnEvent,
    TurnStarted,
)
from muxtui.engine.history import History, conversation_title, storable
from muxtui.engine.redact import redact

ChatStream = Callable[[str, Sequence[ChatMessage], ChatParams], AsyncGenerator[ChatEvent, None]]

# Replies that stay part of the conversation sent with the next prompt: a failed reply is
# shown and kept in the history, but the model never sees it.
CONTEXT_STATUSES: frozenset[MessageStatus] = frozenset({"complete", "stopped", "truncated"})


def context_of(stored: Sequence[StoredMessage]) -> list[ChatMessage]:
    """The messages of a stored conversation that are sent back to the model."""
    return [m.as_chat() for m in stored if m.status in CONTEXT_STATUSES and m.content]


def with_settings(params: ChatParams, settings: ChatSettings) -> ChatParams:
    """`params` with the settings' temperature and max tokens where `params` leaves them unset."""
    changes: dict[str, object] = {}
    if params.temperature is None and settings.temperature is not None:
        changes["temperature"] = settings.temperature
    if params.max_tokens is None and settings.max_tokens is not None:
        changes["max_tokens"] = settings.max_tokens
    return replace(params, **changes) if changes else params  # type: ignore[arg-type]


@dataclass
class Turns:
    """Runs recorded chat turns over one history."""

    history: History
    start: Callable[[], Awaitable[None]]
    chat: ChatStream
    check_model: Callable[[str], Awaitable[None]]
    secrets: Callable[[], Sequence[str]]

    async def run(
        self,
        model: str,
        prompt: str | Sequence[ChatMessage],
        *,
        conversation_id: int | None,
        settings: ChatSettings | None,
        params: ChatParams,
        record: bool,
    ) -> AsyncGenerator[TurnEvent, None]:
        """The events of one turn; see `Engine.run_turn` for the contract."""
        new_messages = _new_messages(prompt)
        await self.start()
        await self.check_model(model)  # a model that cannot work leaves nothing behind
        history = self.history
        secrets = tuple(self.secrets())
        context: list[ChatMessage] = []
        title = conversation_title(_first_user_text(new_messages))
        stored_settings = None
        if conversation_id is not None:
            conversation = await history.get_conversation(conversation_id)
            if conversation is None:
                raise UsageError(
                    f"conversation {conversation_id} does not exist (deleted?); "
                    "start a new one instead"
                )
            title = conversation.title
            context = context_of(await history.messages(conversation_id))
            stored_settings = await history.settings(conversation_id)
        chosen = settings or stored_settings or ChatSettings()
        messages = [*context, *new_messages]
        if chosen.system_prompt:
            messages.insert(0, ChatMessage("system", storable(chosen.system_prompt)))
        request_params = with_settings(params, chosen)
        new_conversation = conversation_id is None
        if record:
            if conversation_id is None:
                conversation = await history.new_conversation(redact(title, secrets), model, chosen)
                conversation_id = conversation.id
            else:
                await history.set_model(conversation_id, model)
                if settings is not None:
                    await history.save_settings(conversation_id, settings)
            for message in new_messages:
                await history.add_message(
                    conversation_id, message.role, redact(message.content, secrets)
                )
        recorded_id = conversation_id if record else None
        reply = _Reply(self.history, recorded_id, model, secrets)
        try:
            yield TurnStarted(recorded_id, title, model, new_conversation)
            async for event in self.chat(model, messages, request_params):
                if isinstance(event, ChatDelta):
                    reply.parts.append(event.text)
                elif isinstance(event, ChatFinished):
                    await reply.store(
                        "complete", event.text, stats=event.stats, finish=event.finish_reason
                    )
                yield event
        except (asyncio.CancelledError, GeneratorExit, KeyboardInterrupt):
            if not reply.stored:
                # Shielded: the partial reply is kept even though this task is being cancelled.
                await asyncio.shield(reply.store("stopped", "".join(reply.parts)))
            raise
        except Exception as exc:
            if not reply.stored:
                status: MessageStatus = (
                    "truncated" if isinstance(exc, TruncatedReplyError) else "error"
                )
                partial = (
                    exc.partial_text
                    if isinstance(exc, StreamInterruptedError)
                    else "".join(reply.parts)
                )
                error = str(exc) if isinstance(exc, MuxtuiError) else f"{type(exc).__name__}: {exc}"
                await reply.store(status, partial, error=error)
            raise


@dataclass
class _Reply:
    """The reply of one turn as it streams, stored once however the turn ends."""

    history: History
    conversation_id: int | None  # None: not recorded
    model: str
    secrets: tuple[str, ...]
    parts: list[str] = field(default_factory=list)
    stored: bool = False

    async def store(
        self,
        status: MessageStatus,
        text: str,
        *,
        stats: ChatStats | None = None,
        error: str = "",
        finish: str = "",
    ) -> None:
        self.stored = True
        if self.conversation_id is None:
            return
        with contextlib.suppress(LookupError):  # deleted while the reply streamed
            await self.history.add_message(
                self.conversation_id,
                "assistant",
                redact(text, self.secrets),
                model=self.model,
                status=status,
                stats=stats,
                error=redact(error, self.secrets),
                finish_reason=finish,
            )


def _new_messages(prompt: str | Sequence[ChatMessage]) -> list[ChatMessage]:
    """The turn's input as clean messages; an empty prompt is a `UsageError`."""
    if isinstance(prompt, str):
        messages = [ChatMessage("user", storable(prompt))]
    else:
        messages = [ChatMessage(m.role, storable(m.content)) for m in prompt]
    if not any(message.content.strip() for message in messages):
        raise UsageError("the prompt is empty; type the text to send")
    return messages


def _first_user_text(messages: Sequence[ChatMessage]) -> str:
    return next((m.content for m in messages if m.role == "user"), messages[0].content)
