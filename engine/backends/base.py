"""The interface every wire protocol implements, and the records it hands back."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

from muxtui.engine.events import ChatDelta, ChatMessage, ChatParams
from muxtui.engine.redact import header_secrets

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class Endpoint:
    """One base URL of a provider, with what a request to it needs."""

    provider: str
    base_url: str
    api_key: str = field(default="", repr=False)
    api_key_env: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    local: bool = False  # a server muxtui started: its failures point at its log, not the config

    def secrets(self) -> list[str]:
        """The values this endpoint sends that must never be shown: its key, secret headers."""
        return [self.api_key, *header_secrets(self.headers)]


@dataclass(frozen=True)
class ChatRequest:
    """One chat turn as a backend sends it."""

    model_id: str
    messages: Sequence[ChatMessage]
    params: ChatParams = field(default_factory=ChatParams)


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The last record of a reply: why it ended and what the server said it cost."""

    finish_reason: str = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_per_s: float | None = None  # measured by the server (llama-server, Ollama)


@dataclass(frozen=True)
class Completion:
    """A whole reply from a non-streaming request."""

    text: str
    end: StreamEnd


@dataclass(frozen=True)
class LoadedModel:
    """A model a server reports as loaded in memory right now."""

    name: str
    size_bytes: int = 0
    vram_bytes: int = 0
    expires_at: str = ""  # ISO 8601 as the server sent it; "" = never


class HTTPFailure(Exception):
    """The server answered with an error status (or an error event inside a stream)."""

    def __init__(self, status: int, body: bytes, headers: Mapping[str, str], ctype: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body
        self.headers = headers
        self.content_type = ctype


class StreamTruncated(Exception):
    """The stream ended cleanly, but before the server said the reply was over."""


class ProtocolFailure(Exception):
    """The server answered, but not in the protocol it should speak."""

    def __init__(self, what: str, sample: bytes = b"") -> None:
        super().__init__(what)
        self.what = what
        self.sample = sample


class Backend(ABC):
    """A chat API spoken over a pooled `httpx.AsyncClient` that the backend never owns."""

    kind: ClassVar[str]
    lists_loaded_models: ClassVar[bool] = False  # `loaded_models()` says something useful

    def __init__(self, client: httpx.AsyncClient, endpoint: Endpoint) -> None:
        self.client = client
        self.endpoint = endpoint

    @abstractmethod
    def stream_chat(self, request: ChatRequest) -> AsyncGenerator[ChatDelta | StreamEnd, None]:
        """Stream the reply: `ChatDelta`s, then exactly one `StreamEnd` once the body is read."""

    @abstractmethod
    async def complete(self, request: ChatRequest) -> Completion:
        """Ask for the whole reply in one response."""

    @abstractmethod
    async def list_models(self, timeout: float | None = None) -> list[str]:
        """The model ids the server offers."""

    async def loaded_models(self, timeout: float | None = None) -> list[LoadedModel]:
        """Models loaded in memory now; empty where the protocol cannot tell."""
        return []


class Answered(Protocol):
    """What an error is read from: an `httpx.Response`, or serve's aiohttp replies."""

    @property
    def status_code(self) -> int:
        """The HTTP status."""
        ...

    @property
    def headers(self) -> Mapping[str, str]:
        """The response headers."""
        ...


def error_from_response(response: Answered, body: bytes) -> HTTPFailure:
    """An `HTTPFailure` carrying what the error response said."""
    return HTTPFailure(
        response.status_code,
        body,
        dict(response.headers),
        response.headers.get("content-type", ""),
    )


def text_content(content: object) -> str:
    """Message content as text: strings pass through, multimodal parts are joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""
