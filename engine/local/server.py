"""One local model and its server: the mutable record the manager keeps, and the endpoint a
request gets."""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

from muxtui.engine.events import ModelEntry, ServerState
from muxtui.engine.local.masking import redact, secret_values
from muxtui.engine.local.models import LocalModelSpec
from muxtui.engine.local.policy import Resident
from muxtui.engine.local.process import ManagedProcess

log = logging.getLogger(__name__)

StatusCallback = Callable[[str], None]


@dataclass(frozen=True)
class LocalEndpoint:
    """Where a warm local server answers: an OpenAI-compatible base URL and the model id to send."""

    name: str
    base_url: str  # "http://127.0.0.1:PORT/v1"
    model_id: str
    port: int
    pid: int
    api_key: str = field(default="", repr=False)  # a `muxtui serve` that asks for a key


class ServerRecord:
    """The mutable record of one local model and its server process."""

    def __init__(self, spec: LocalModelSpec) -> None:
        self.spec = spec
        self.secrets: frozenset[str] = frozenset()  # masked wherever its text is shown
        self.set_spec(spec)
        self.state = ServerState.COLD
        self.detail = ""
        self.process: ManagedProcess | None = None
        self.port: int | None = None
        self.model_id = ""
        self.endpoint: LocalEndpoint | None = None
        self.log_offset = 0
        self.in_flight = 0
        self.pending = 0  # callers waiting for a start; a server they wait for is not evictable
        self.hits = 0
        self.misses = 0
        self.load_time_s: float | None = None
        self.last_used = 0.0
        self.pinned = spec.pin
        self.requested_seq = 0  # order of start requests: earlier starts get room first
        self.start_task: asyncio.Task[None] | None = None
        self.stop_task: asyncio.Task[None] | None = None
        self.abort_reason = ""  # set by unload() while starting
        self.listeners: list[StatusCallback] = []
        self.rss_bytes = 0
        self.vram_bytes = 0
        self.binary = ""  # the runtime executable of the last start or scan
        self.incompatible: str | None = None  # why its runtime cannot run on this machine

    def set_spec(self, spec: LocalModelSpec) -> None:
        """Take a (re)scanned spec, and the secrets its command and environment hold."""
        self.spec = spec
        try:
            tokens = shlex.split(spec.cmd)
        except ValueError:
            tokens = spec.cmd.split()
        self.secrets = secret_values(tokens, spec.env)

    @property
    def name(self) -> str:
        """The model's name, as `--model` takes it."""
        return self.spec.name

    @property
    def live(self) -> bool:
        """Whether it holds (or is about to hold) a process and so counts against the limits."""
        return self.process is not None or self.state is ServerState.STARTING

    @property
    def ready(self) -> bool:
        """Whether a request can use it now."""
        process = self.process
        return (
            self.state in (ServerState.WARM, ServerState.BUSY)
            and process is not None
            and process.returncode is None
        )

    @property
    def memory_bytes(self) -> int:
        """Measured RSS + VRAM, or the estimate while nothing was measured yet."""
        measured = self.rss_bytes + self.vram_bytes
        return measured if measured > 0 else self.spec.estimate_bytes

    def settled(self) -> bool:
        """No start or stop of it is under way."""
        return self.start_task is None and self.stop_task is None

    def resident(self) -> Resident:
        """What the eviction policy needs to know about it."""
        state = self.state
        if state is ServerState.WARM and not self.settled():
            state = ServerState.STOPPING if self.stop_task is not None else ServerState.STARTING
        return Resident(
            name=self.name,
            memory_bytes=self.memory_bytes,
            last_used=self.last_used,
            pinned=self.pinned,
            in_flight=self.in_flight,
            waiting=self.pending,
            state=state,
        )

    def forget_process(self) -> None:
        """Drop everything that belonged to the process that ran."""
        self.process = None
        self.port = None
        self.endpoint = None
        self.rss_bytes = self.vram_bytes = 0

    def announce(self, message: str) -> None:
        """Tell the requests waiting for this server how its start is going."""
        message = self.masked(message)
        for callback in list(self.listeners):
            try:
                callback(message)
            except Exception:
                log.exception("status callback failed")

    def masked(self, text: str) -> str:
        """`text` with this server's secrets masked."""
        return redact(text, self.secrets) if self.secrets else text

    def entry(self, ttl_left_s: float | None) -> ModelEntry:
        """Its row for `muxtui models` and the Models pane."""
        spec = self.spec
        process = self.process
        return ModelEntry(
            name=self.name,
            provider="local",
            local=True,
            state=self.state,
            model_id=self.model_id,
            source=spec.source,
            path=spec.path,
            size_bytes=spec.size_bytes,
            port=self.port,
            pid=process.pid if process is not None else None,
            rss_bytes=self.rss_bytes,
            vram_bytes=self.vram_bytes,
            load_time_s=self.load_time_s,
            ttl_left_s=ttl_left_s,
            in_flight=self.in_flight,
            hits=self.hits,
            misses=self.misses,
            pinned=self.pinned,
            detail=self.detail,
            incompatible=self.incompatible,
        )
