"""Ollama's native API: `/api/chat` streamed as NDJSON, `/api/tags`, `/api/ps`."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from muxtui.engine.backends.base import (
    Backend,
    ChatRequest,
    Completion,
    Endpoint,
    HTTPFailure,
    LoadedModel,
    ProtocolFailure,
    StreamEnd,
    StreamTruncated,
    error_from_response,
)
from muxtui.engine.events import ChatDelta

if TYPE_CHECKING:
    import httpx

_loads = json.loads


def ollama_root(base_url: str) -> str:
    """The server root: a configured `/api` or `/v1` suffix is dropped."""
    root = base_url.rstrip("/")
    for suffix in ("/api", "/v1"):
        if root.endswith(suffix):
            return root[: -len(suffix)]
    return root


def _headers(endpoint: Endpoint) -> dict[str, str]:
    headers = {}
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    headers.update(endpoint.headers)
    return headers


def chat_target(endpoint: Endpoint) -> tuple[str, dict[str, str]]:
    """The URL of Ollama's OpenAI-shaped chat API and the headers every request carries."""
    return f"{ollama_root(endpoint.base_url)}/v1/chat/completions", _headers(endpoint)


class OllamaBackend(Backend):
    """Ollama's own protocol, which reports eval counts and durations with every reply."""

    kind: ClassVar[str] = "ollama"
    lists_loaded_models: ClassVar[bool] = True

    def __init__(self, client: httpx.AsyncClient, endpoint: Endpoint) -> None:
        super().__init__(client, endpoint)
        self._root = ollama_root(endpoint.base_url)
        self._headers = _headers(endpoint)

    def _body(self, request: ChatRequest, stream: bool) -> dict[str, Any]:
        params = request.params
        stop = [params.stop] if isinstance(params.stop, str) else params.stop
        options: dict[str, Any] = {
            name: value
            for name, value in (
                ("temperature", params.temperature),
                ("top_p", params.top_p),
                ("seed", params.seed),
                ("presence_penalty", params.presence_penalty),
                ("frequency_penalty", params.frequency_penalty),
                ("num_predict", params.max_tokens),
                ("stop", list(stop) if stop is not None else None),
            )
            if value is not None
        }
        body: dict[str, Any] = {
            "model": request.model_id,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": stream,
        }
        if params.response_format is not None and params.response_format.get("type") != "text":
            body["format"] = _ollama_format(params.response_format)
        if params.tools is not None:
            body["tools"] = list(params.tools)
        # Ollama has no tool_choice: its models decide for themselves whether to call a tool.
        extra = dict(params.extra)
        extra_options = extra.pop("options", None)
        if isinstance(extra_options, dict):
            options.update(extra_options)
        if options:
            body["options"] = options
        body.update(extra)
        return body

    async def stream_chat(
        self, request: ChatRequest
    ) -> AsyncGenerator[ChatDelta | StreamEnd, None]:
        """Stream the reply as NDJSON lines; the last one (`done: true`) carries the counts."""
        body = self._body(request, stream=True)
        async with self.client.stream(
            "POST", f"{self._root}/api/chat", json=body, headers=self._headers
        ) as response:
            if response.status_code >= 400:
                raise error_from_response(response, await response.aread())
            end: StreamEnd | None = None
            tail = b""
            encoded = response.headers.get("content-encoding", "identity") != "identity"
            chunks = response.aiter_bytes() if encoded else response.aiter_raw()
            async for chunk in chunks:
                lines = (tail + chunk).split(b"\n") if tail else chunk.split(b"\n")
                tail = lines.pop()
                for line in lines:
                    if not line.strip():
                        continue
                    text, last = _absorb(line)
                    if text:
                        yield ChatDelta(text)
                    if last is not None:
                        end = last
            if tail.strip():
                text, last = _absorb(tail)
                if text:
                    yield ChatDelta(text)
                end = last or end
            if end is None:
                raise StreamTruncated
            yield end

    async def complete(self, request: ChatRequest) -> Completion:
        """One non-streaming request."""
        body = self._body(request, stream=False)
        response = await self.client.post(
            f"{self._root}/api/chat", json=body, headers=self._headers
        )
        if response.status_code >= 400:
            raise error_from_response(response, response.content)
        text, end = _absorb(response.content)
        if end is None:
            raise ProtocolFailure("an Ollama chat reply", response.content[:200])
        return Completion(text, end)

    async def list_models(self, timeout: float | None = None) -> list[str]:
        """`GET /api/tags`: every model pulled on the server."""
        listing = await self._get_json("/api/tags", timeout)
        try:
            return [str(item["name"]) for item in listing["models"]]
        except (KeyError, TypeError):
            raise ProtocolFailure("an Ollama model list") from None

    async def loaded_models(self, timeout: float | None = None) -> list[LoadedModel]:
        """`GET /api/ps`: models in memory now, with their size and when Ollama unloads them."""
        listing = await self._get_json("/api/ps", timeout)
        try:
            return [
                LoadedModel(
                    name=str(item["name"]),
                    size_bytes=int(item.get("size") or 0),
                    vram_bytes=int(item.get("size_vram") or 0),
                    expires_at=str(item.get("expires_at") or ""),
                )
                for item in listing["models"]
            ]
        except (KeyError, TypeError, ValueError):
            raise ProtocolFailure("an Ollama process list") from None

    async def post_chat(self, body: bytes) -> httpx.Response:
        """POST an OpenAI-shaped chat body as given to Ollama's `/v1/chat/completions`."""
        headers = self._headers | {"Accept": "application/json", "Content-Type": "application/json"}
        return await self.client.post(
            f"{self._root}/v1/chat/completions", content=body, headers=headers
        )

    def stream_request(self, body: bytes) -> httpx.Request:
        """A POST of an OpenAI-shaped chat body as given, to send with `stream=True`."""
        headers = self._headers | {"Accept": "text/event-stream"}
        headers["Content-Type"] = "application/json"
        return self.client.build_request(
            "POST", f"{self._root}/v1/chat/completions", content=body, headers=headers
        )

    async def open_stream(self, body: bytes) -> httpx.Response:
        """Send an OpenAI-shaped chat body as given; the response with its body still to read."""
        return await self.client.send(self.stream_request(body), stream=True)

    async def _get_json(self, path: str, timeout: float | None) -> Any:
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        response = await self.client.get(f"{self._root}{path}", headers=self._headers, **extra)
        if response.status_code >= 400:
            raise error_from_response(response, response.content)
        try:
            return response.json()
        except ValueError:
            raise ProtocolFailure("JSON from Ollama", response.content[:200]) from None


def _ollama_format(response_format: Mapping[str, object]) -> object:
    """OpenAI's JSON `response_format` as Ollama's `format`: "json", or the schema itself."""
    schema = response_format.get("json_schema")
    if response_format.get("type") == "json_schema" and isinstance(schema, Mapping):
        return schema.get("schema", {})
    return "json"


def _absorb(line: bytes) -> tuple[str, StreamEnd | None]:
    """The text of one NDJSON line, and the `StreamEnd` if it is the last one."""
    try:
        obj = _loads(line)
        message = obj.get("message")
    except (ValueError, AttributeError):
        raise ProtocolFailure("an Ollama NDJSON stream", line[:200]) from None
    if "error" in obj:
        raise HTTPFailure(500, line, {}, "application/json")
    text = message.get("content") if isinstance(message, dict) else None
    if not obj.get("done"):
        return (text if isinstance(text, str) else ""), None
    count = obj.get("eval_count")
    duration = obj.get("eval_duration")
    rate = None
    if isinstance(count, int) and isinstance(duration, int) and duration > 0:
        rate = count / (duration / 1e9)
    prompt = obj.get("prompt_eval_count")
    end = StreamEnd(
        finish_reason=str(obj.get("done_reason") or "stop"),
        prompt_tokens=prompt if isinstance(prompt, int) else None,
        completion_tokens=count if isinstance(count, int) else None,
        tokens_per_s=rate,
    )
    return (text if isinstance(text, str) else ""), end
