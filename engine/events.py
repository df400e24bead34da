"""What the engine tells its listeners: plain frozen dataclasses, never UI messages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from muxtui.engine.errors import SettingsError

if TYPE_CHECKING:
    from muxtui.engine.monitor.samples import Sample


@dataclass(frozen=True)
class ChatMessage:
    """One message of a conversation as sent to a model."""

    role: str  # "system", "user" or "assistant"
    content: str


# Body fields the engine sets itself from the turn; `ChatParams.extra` may not carry them.
ENGINE_BODY_FIELDS = frozenset({"model", "messages", "stream", "stream_options"})


@dataclass(frozen=True)
class ChatParams:
    """Generation settings for one request; None leaves a setting to the server's default.

    Each named field is the OpenAI chat-completions field of the same name and goes on the
    wire as given. `extra` carries any other body field (`logprobs`, `user`, `n`, a provider's
    own) untouched, so a request body survives `from_body` and `body_fields` without loss.
    Only the first choice of a reply is streamed back, and tool calls are sent, not read back.
    """

    temperature: float | None = None
    max_tokens: int | None = None
    stream: bool = True
    top_p: float | None = None
    stop: str | tuple[str, ...] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    response_format: Mapping[str, object] | None = None
    tools: tuple[Mapping[str, object], ...] | None = None
    tool_choice: str | Mapping[str, object] | None = None
    extra: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clashing = sorted(set(self.extra) & (ENGINE_BODY_FIELDS | _NAMED_BODY_FIELDS))
        if clashing:
            raise ValueError(
                f"ChatParams.extra may not carry {', '.join(clashing)}: "
                "use the named field, or leave it to the engine"
            )

    def body_fields(self) -> dict[str, object]:
        """The fields that are set, as OpenAI request body fields, then `extra`."""
        fields: dict[str, object] = {}
        for name in _NAMED_BODY_FIELDS:
            value = getattr(self, name)
            if value is not None:
                fields[name] = list(value) if isinstance(value, tuple) else value
        fields.update(self.extra)
        return fields

    @classmethod
    def from_body(cls, body: Mapping[str, object]) -> ChatParams:
        """The params of an OpenAI request body: named fields checked, the rest in `extra`.

        `model`, `messages` and `stream_options` are left out (the turn supplies them);
        `stream` defaults to false as in the API. Raises `ValueError` naming a mistyped field.
        """
        named: dict[str, Any] = {}
        for name in _NAMED_BODY_FIELDS:
            value = body.get(name)
            if value is None:
                continue
            kinds, expected = _BODY_FIELD_TYPES[name]
            wrong = not isinstance(value, kinds) or isinstance(value, bool)
            if name == "stop" and isinstance(value, list | tuple):
                wrong = not all(isinstance(item, str) for item in value)
            if wrong:
                raise ValueError(f"{name} must be {expected}, not {value!r}")
            if isinstance(value, list):
                value = tuple(value)
            named[name] = value
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise ValueError(f"stream must be true or false, not {stream!r}")
        extra = {
            key: value
            for key, value in body.items()
            if key not in ENGINE_BODY_FIELDS and key not in _NAMED_BODY_FIELDS
        }
        return cls(stream=stream, extra=extra, **named)


# Each named body field: the JSON types it accepts, and how a message names them.
_NUMBER = ((float, int), "a number")
_BODY_FIELD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "temperature": _NUMBER,
    "max_tokens": ((int,), "an integer"),
    "top_p": _NUMBER,
    "stop": ((str, list, tuple), "a string or a list of strings"),
    "seed": ((int,), "an integer"),
    "presence_penalty": _NUMBER,
    "frequency_penalty": _NUMBER,
    "response_format": ((dict,), "an object"),
    "tools": ((list, tuple), "a list"),
    "tool_choice": ((str, dict), "a string or an object"),
}
_NAMED_BODY_FIELDS = frozenset(_BODY_FIELD_TYPES)


TEMPERATURE_MIN, TEMPERATURE_MAX = 0.0, 2.0


@dataclass(frozen=True)
class ChatSettings:
    """A conversation's own settings, stored with it; invalid values raise `SettingsError`."""

    system_prompt: str = ""
    temperature: float | None = None  # 0 to 2; None = the server's default
    max_tokens: int | None = None  # 1 or more; None = the server's limit

    def __post_init__(self) -> None:
        temperature = self.temperature
        if temperature is not None and (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not TEMPERATURE_MIN <= temperature <= TEMPERATURE_MAX
        ):
            raise SettingsError(
                f"temperature must be between {TEMPERATURE_MIN:g} and {TEMPERATURE_MAX:g}, "
                f"not {temperature!r}"
            )
        tokens = self.max_tokens
        if tokens is not None and (
            isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1
        ):
            raise SettingsError(f"max tokens must be a whole number, 1 or more, not {tokens!r}")


@dataclass(frozen=True)
class ChatDelta:
    """A piece of reply text as it streams in."""

    text: str


@dataclass(frozen=True)
class ChatStatus:
    """Progress before the first token, e.g. a local server loading."""

    message: str


@dataclass(frozen=True)
class ChatStats:
    """What one reply cost and how fast it came."""

    model: str
    provider: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float = 0.0
    tokens_per_s: float = 0.0
    total_s: float = 0.0
    # False when the server sent no token count: `completion_tokens` then counts streamed
    # chunks, and `tokens_per_s` chunks per second.
    tokens_reported: bool = True
    cached: bool = False  # replayed from the response cache; no server was asked


@dataclass(frozen=True)
class ChatFinished:
    """The reply is complete; `text` is all of it (stored already when it comes from a turn)."""

    text: str
    stats: ChatStats
    finish_reason: str = "stop"

    @property
    def cached(self) -> bool:
        """Whether the reply came from the response cache (no server was asked)."""
        return self.stats.cached


@dataclass(frozen=True)
class TurnStarted:
    """The first event of `Engine.run_turn`: the prompt is stored, the request about to go."""

    conversation_id: int | None  # None when the turn is not recorded
    title: str
    model: str
    new_conversation: bool


@dataclass(frozen=True)
class ContextFitted:
    """What one turn sends of its conversation and how full that makes the model's window."""

    model: str
    sent_messages: int  # messages sent, system prompt and new message included
    omitted: int  # earlier messages left out (the oldest ones)
    sent_tokens: int  # counted tokens of what is sent, template included
    limit: int | None  # the model's context window; None when unknown
    reply_budget: int  # tokens kept free for the reply
    counted_by: str  # "tokenizer" (the server's own) or "estimate"
    window_source: str  # where the window came from (see ContextWindow.source)
    retried: bool = False  # this fit follows a rejection of a looser one

    @property
    def fill(self) -> float | None:
        """How full the window is with what is sent (0-1), or None when it is unknown."""
        return min(1.0, self.sent_tokens / self.limit) if self.limit else None

    @property
    def notice(self) -> str:
        """The line the chat shows when messages were left out; empty when none were."""
        if not self.omitted:
            return ""
        plural = "message" if self.omitted == 1 else "messages"
        limit = f"{self.limit:,} tokens" if self.limit else "a smaller context"
        return f"{self.omitted:,} earlier {plural} not sent: {self.model} has {limit}"


ChatEvent = ChatDelta | ChatStatus | ChatFinished | ContextFitted
TurnEvent = TurnStarted | ChatDelta | ChatStatus | ChatFinished | ContextFitted

# How a stored reply ended: whole; stopped by the person; failed with an error; or cut off
# by the server (the stream ended without saying the reply was over).
MessageStatus = Literal["complete", "stopped", "error", "truncated"]
MESSAGE_STATUSES: tuple[MessageStatus, ...] = ("complete", "stopped", "error", "truncated")


@dataclass(frozen=True)
class Conversation:
    """One conversation's summary."""

    id: int
    title: str
    model: str
    created_at: float
    updated_at: float
    message_count: int = 0


@dataclass(frozen=True)
class StoredMessage:
    """One stored message; a reply cut short keeps its partial text and says why."""

    id: int
    conversation_id: int
    role: str
    content: str
    model: str = ""
    status: MessageStatus = "complete"
    error: str = ""
    created_at: float = 0.0
    stats: ChatStats | None = None
    finish_reason: str = ""  # the server's, for a complete reply ("stop", "length" ...)

    def as_chat(self) -> ChatMessage:
        """The message as it is sent back to a model."""
        return ChatMessage(self.role, self.content)


class ServerState(StrEnum):
    """Life cycle of a model as `muxtui models` reports it."""

    COLD = "cold"
    STARTING = "starting"
    WARM = "warm"
    BUSY = "busy"
    STOPPING = "stopping"
    FAILED = "failed"
    REMOTE = "remote"


@dataclass(frozen=True)
class ServerStateChanged:
    """A local model server moved from one state to another."""

    model: str
    state: ServerState
    previous: ServerState
    detail: str = ""


@dataclass(frozen=True)
class ModelsChanged:
    """The set of known models changed (discovery finished, config reloaded)."""

    names: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class ModelEntry:
    """One known model as `muxtui models` and the Models pane show it."""

    name: str  # what `--model` accepts
    provider: str  # provider name, or "local" for servers muxtui starts
    local: bool  # True for a server muxtui starts
    state: ServerState
    model_id: str = ""  # the provider's own id
    source: str = "config"  # "config", "discovered", "bundled", "ollama"
    path: str = ""
    size_bytes: int = 0
    port: int | None = None
    pid: int | None = None
    rss_bytes: int = 0
    vram_bytes: int = 0
    load_time_s: float | None = None
    ttl_left_s: float | None = None
    in_flight: int = 0
    hits: int = 0
    misses: int = 0
    pinned: bool = False
    detail: str = ""  # last error, log tail, or expiry for Ollama's loaded models
    incompatible: str | None = None  # why its runtime cannot run on this machine (never default)


@dataclass(frozen=True)
class SampleTaken:
    """The Monitor took a sample: memory, CPU, model servers, GPUs and the alerts raised."""

    sample: Sample


class BatchState(StrEnum):
    """Where a batch run is: reading its input, sending requests, or ended (and how)."""

    PREPARING = "preparing"
    RUNNING = "running"
    FINISHED = "finished"
    CANCELLED = "cancelled"
    FAILED = "failed"


@dataclass(frozen=True)
class BatchItem:
    """One finished item of a batch, for the latest-items table."""

    custom_id: str
    line: int  # the input line it came from
    ok: bool
    latency_s: float  # from the first attempt to the reply, retries included
    tokens: int = 0  # completion tokens the server reported
    detail: str = ""  # the start of the reply, or the error message


@dataclass(frozen=True)
class BatchProgress:
    """A batch's counters and rates; sent a few times a second and once at the end."""

    job: int  # which run of this engine
    state: BatchState
    total: int  # items in the input, bad lines included
    skipped: int = 0  # finished by an earlier run with the same output
    succeeded: int = 0  # finished by this run
    failed: int = 0  # this run's error records, bad lines included
    in_flight: int = 0
    requests_per_s: float = 0.0  # items finished per second, recent window
    tokens_per_s: float = 0.0  # completion tokens per second, recent window
    eta_s: float | None = None  # None while no rate is known
    elapsed_s: float = 0.0
    concurrency: int = 0
    message: str = ""  # what the run is doing or why it ended, one line
    recent: tuple[BatchItem, ...] = ()  # the latest finished items, newest last

    @property
    def done(self) -> int:
        """Items with a record in the output or error file."""
        return self.skipped + self.succeeded + self.failed

    @property
    def remaining(self) -> int:
        """Items still to finish."""
        return max(0, self.total - self.done)


@dataclass(frozen=True)
class ResponseCacheChanged:
    """The reply cache stopped working (replies go uncached) or works again."""

    backend: str  # "sqlite" or "redis"
    healthy: bool
    message: str  # one line for a status bar or notification, no secret in it
