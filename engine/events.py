"""What the engine tells its listeners: plain frozen dataclasses, never UI messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True)
class ChatMessage:
    """One message of a conversation as sent to a model."""

    role: str  # "system", "user" or "assistant"
    content: str


@dataclass(frozen=True)
class ChatParams:
    """Sampling settings for one chat turn; None means the server's default."""

    temperature: float | None = None
    max_tokens: int | None = None
    stream: bool = True


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


@dataclass(frozen=True)
class ChatFinished:
    """The reply is complete; `text` is all of it."""

    text: str
    stats: ChatStats
    finish_reason: str = "stop"


ChatEvent = ChatDelta | ChatStatus | ChatFinished


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
