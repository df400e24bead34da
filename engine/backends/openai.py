"""The OpenAI-compatible chat API: OpenRouter, OpenAI, llama-server, mlx_lm.server, vLLM ..."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, ClassVar

from muxtui.engine.backends.base import (
    Backend,
    ChatRequest,
    Completion,
    Endpoint,
    HTTPFailure,
    ProtocolFailure,
    StreamEnd,
    StreamTruncated,
    error_from_response,
    text_content,
)
from muxtui.engine.events import ChatDelta

if TYPE_CHECKING:
    import httpx

APP_URL = "https://github.com/muxtui/muxtui"  # OpenRouter's app attribution
APP_TITLE = "muxtui"

_decode_json = json.JSONDecoder().decode  # json.loads less its per-call type checks


class SSEDecoder:
    """Turns the bytes of a `text/event-stream` into the data payload of each event."""

    __slots__ = ("_skip_lf", "_tail")

    def __init__(self) -> None:
        self._tail = b""
        self._skip_lf = False

    def feed(self, chunk: bytes) -> list[bytes]:
        """The payloads of the events completed by `chunk`."""
        if self._skip_lf:  # the previous chunk ended in CR: a LF now is the rest of a CRLF
            self._skip_lf = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        buffer = self._tail + chunk if self._tail else chunk
        if b"\r" in buffer:  # CR and CRLF end lines too
            self._skip_lf = buffer.endswith(b"\r")
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        # Events end at a blank line; splitting on it handles the usual one-line event with
        # no per-line work, which keeps the cost per streamed token low.
        blocks = buffer.split(b"\n\n")
        self._tail = blocks.pop()
        events: list[bytes] = []
        for block in blocks:
            if block.startswith(b"data: ") and b"\n" not in block:
                events.append(block[6:])
            else:
                payload = _event_data(block)
                if payload is not None:
                    events.append(payload)
        return events

    def close(self) -> list[bytes]:
        """The payload of an event left unterminated at the end of the stream, if any."""
        tail, self._tail = self._tail, b""
        return self.feed(tail + b"\n\n") if tail.strip() else []


def _event_data(block: bytes) -> bytes | None:
    """The data of one event block in its general form: several lines, comments, other fields."""
    data = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        # blank lines, comments (":keep-alive"), `event:`, `id:` and `retry:` carry nothing we use
    return b"\n".join(data) if data else None


def chat_target(endpoint: Endpoint) -> tuple[str, dict[str, str]]:
    """The chat URL of an endpoint and the headers every request to it carries."""
    headers = {"Accept": "text/event-stream, application/json"}
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    if endpoint.provider == "openrouter" or "openrouter.ai" in endpoint.base_url:
        headers["HTTP-Referer"] = APP_URL
        headers["X-Title"] = APP_TITLE
    headers.update(endpoint.headers)
    return f"{endpoint.base_url}/chat/completions", headers


class OpenAIBackend(Backend):
    """`POST /chat/completions` with SSE streaming and usage in the final chunk."""

    kind: ClassVar[str] = "openai"

    def __init__(self, client: httpx.AsyncClient, endpoint: Endpoint) -> None:
        super().__init__(client, endpoint)
        self._chat_url, self._headers = chat_target(endpoint)

    def _body(self, request: ChatRequest, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model_id,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        body.update(request.params.body_fields())
        return body

    async def stream_chat(
        self, request: ChatRequest
    ) -> AsyncGenerator[ChatDelta | StreamEnd, None]:
        """Stream the reply over SSE; the body is read to its end so the connection is reused."""
        body = self._body(request, stream=True)
        async with self.client.stream(
            "POST", self._chat_url, json=body, headers=self._headers
        ) as response:
            if response.status_code >= 400:
                raise error_from_response(response, await response.aread())
            ctype = response.headers.get("content-type", "")
            if not ctype.startswith("text/event-stream"):
                # Some servers ignore `stream` and answer with the whole completion.
                completion = _parse_completion(await response.aread(), ctype)
                if completion.text:
                    yield ChatDelta(completion.text)
                yield completion.end
                return
            decoder = SSEDecoder()
            end = _EndState()
            # Without a content coding the raw chunks are the bytes: one generator layer less
            # between the socket and each token.
            encoded = response.headers.get("content-encoding", "identity") != "identity"
            chunks = response.aiter_bytes() if encoded else response.aiter_raw()
            async for chunk in chunks:
                for data in decoder.feed(chunk):
                    delta = end.absorb(data)
                    if delta:
                        yield ChatDelta(delta)
            for data in decoder.close():
                delta = end.absorb(data)
                if delta:
                    yield ChatDelta(delta)
            if not (end.done or end.finished):
                raise StreamTruncated
            yield end.result()

    async def complete(self, request: ChatRequest) -> Completion:
        """One non-streaming request."""
        response = await self.post_chat(json.dumps(self._body(request, stream=False)).encode())
        content = response.content
        if response.status_code >= 400:
            raise error_from_response(response, content)
        return _parse_completion(content, response.headers.get("content-type", ""))

    async def list_models(self, timeout: float | None = None) -> list[str]:
        """`GET /models`."""
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        response = await self.client.get(
            f"{self.endpoint.base_url}/models", headers=self._headers, **extra
        )
        if response.status_code >= 400:
            raise error_from_response(response, response.content)
        try:
            listing = response.json()
            return [str(item["id"]) for item in listing["data"]]
        except (ValueError, KeyError, TypeError):
            raise ProtocolFailure("a model list", response.content[:200]) from None

    # A ready body sent as given (`Engine.forward_chat`, the batch runner): built once per backend,
    # a parsed URL and fixed headers save httpx a third of its per-request work.
    _post_url: httpx.URL | None = None
    _post_headers: dict[str, str] | None = None

    async def post_chat(self, body: bytes) -> httpx.Response:
        """POST a JSON chat body exactly as given, not streamed; the response, read whole."""
        if self._post_url is None:
            import httpx

            self._post_url = httpx.URL(self._chat_url)
            self._post_headers = self._headers | {
                "Accept": "application/json",
                "Content-Type": "application/json",
            }
        return await self.client.post(self._post_url, content=body, headers=self._post_headers)

    def stream_request(self, body: bytes) -> httpx.Request:
        """A POST of a JSON chat body exactly as given, to send with `stream=True`."""
        headers = self._headers | {"Content-Type": "application/json"}
        return self.client.build_request("POST", self._chat_url, content=body, headers=headers)

    async def open_stream(self, body: bytes) -> httpx.Response:
        """Send a JSON chat body exactly as given; the response with its body still to read."""
        return await self.client.send(self.stream_request(body), stream=True)


class _EndState:
    """Reads each SSE payload, returns its text and remembers usage and finish reason."""

    __slots__ = (
        "completion_tokens",
        "done",
        "finish_reason",
        "finished",
        "prompt_tokens",
        "tokens_per_s",
    )

    def __init__(self) -> None:
        self.done = False  # [DONE] arrived
        self.finished = False  # a finish_reason arrived
        self.finish_reason = "stop"
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.tokens_per_s: float | None = None

    def absorb(self, data: bytes) -> str | None:
        """The text in one payload (None if it carries none)."""
        if data == b"[DONE]":
            self.done = True
            return None
        try:
            chunk = _decode_json(data.decode())
            choices = chunk.get("choices")
        except (ValueError, AttributeError):
            raise ProtocolFailure("an OpenAI-compatible event stream", data[:200]) from None
        text = None
        if choices:
            choice = choices[0]
            delta = choice.get("delta")
            if delta:
                text = delta.get("content")
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
                self.finished = True
        if "usage" in chunk or "timings" in chunk or "error" in chunk:
            self._extras(chunk)
        return text if isinstance(text, str) else None

    def _extras(self, chunk: dict[str, Any]) -> None:
        error = chunk.get("error")
        if error:
            # OpenRouter reports upstream failures as an error event inside a 200 stream.
            code = error.get("code") if isinstance(error, dict) else None
            status = code if isinstance(code, int) and 400 <= code < 600 else 502
            raise HTTPFailure(status, json.dumps(chunk).encode(), {}, "application/json")
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.prompt_tokens = _int_or_none(usage.get("prompt_tokens"))
            self.completion_tokens = _int_or_none(usage.get("completion_tokens"))
        timings = chunk.get("timings")
        if isinstance(timings, dict):
            rate = timings.get("predicted_per_second")
            if isinstance(rate, int | float) and rate > 0:
                self.tokens_per_s = float(rate)

    def result(self) -> StreamEnd:
        return StreamEnd(
            self.finish_reason, self.prompt_tokens, self.completion_tokens, self.tokens_per_s
        )


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _parse_completion(content: bytes, ctype: str) -> Completion:
    """A whole `chat.completion` object, or a `ProtocolFailure` naming what came instead."""
    try:
        reply = json.loads(content)
        choice = reply["choices"][0]
        text = text_content(choice["message"].get("content"))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise ProtocolFailure("an OpenAI-compatible chat completion", content[:200]) from None
    end = _EndState()
    end._extras(reply)
    end.finish_reason = str(choice.get("finish_reason") or "stop")
    return Completion(text, end.result())
