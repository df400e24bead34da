"""`POST /v1/chat/completions`: the body forwarded as given, the reply returned as sent.

Parsed once (json.loads), re-encoded once without `model` (batch's `encode_body`: compact, key
order kept), sent to the model asked for and then its fallbacks (the router's plan). Retries
and fallbacks happen only before the first byte of a reply's body reaches the client; a stream
that breaks after that ends with an error event, never a second answer. The response cache
(engine/serve/cached.py) answers first when the body asks for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from muxtui.engine.batch.plan import encode_body
from muxtui.engine.errors import MuxtuiError, UnknownModelError
from muxtui.engine.retry import ATTEMPT_FAILURES
from muxtui.engine.serve.cached import HEADER, ServeCache, replayed, stream_objects, whole_body
from muxtui.engine.serve.errors import (
    ServeError,
    error_body,
    error_response,
    from_engine,
    may_fall_back,
    parse_object,
)
from muxtui.engine.serve.record import reply_text, request_messages

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from muxtui.engine.core import Engine
    from muxtui.engine.router import Target
    from muxtui.engine.serve.observer import Observer
    from muxtui.engine.serve.upstream import UpstreamStream

log = logging.getLogger("muxtui.serve")
_loads = json.loads
_USAGE_TAIL = 4096  # bytes of a stream's end kept to read its usage from
_DELTA = b'"delta"'  # once per streamed event with a choice: an inter-token gap for the metrics
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


class ChatRoute:
    """The chat endpoint over one engine, with its observer, cache and history switch."""

    def __init__(self, engine: Engine, observer: Observer, max_body: int) -> None:
        self.engine = engine
        self.observer = observer
        self.max_body = max_body
        self.history = engine.config.serve.history
        self.cache = ServeCache(engine) if engine.config.response_cache.backend != "off" else None
        self._background: set[asyncio.Task[None]] = set()

    def too_large(self) -> ServeError:
        """The 413 for a body over `[serve] max_body_mb`."""
        limit = self.max_body / (1024 * 1024)
        return ServeError(
            413,
            f"the request body is over {limit:g} MiB; send less, or raise [serve] max_body_mb",
            "request_too_large",
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one chat request."""
        started = time.perf_counter()
        length = request.content_length
        if length is not None and length > self.max_body:
            raise self.too_large()
        body = parse_object(await request.read())
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ServeError(400, "the body needs a `model` (a muxtui model name)", "missing_model")
        if not isinstance(body.get("messages"), list):
            raise ServeError(400, "the body needs `messages` (a list)", "missing_messages")
        targets = await self._plan(model)
        observer = self.observer
        observer.request_started(model)
        stream = body.get("stream") is True
        key = None
        if self.cache is not None:
            key = await self.cache.key(model, body, request.headers.get(HEADER))
            if key is not None:
                hit = await self.cache.get(key)
                observer.cache(model, hit is not None)
                if hit is not None:
                    return await self._hit(request, model, body, hit, stream, started)
        payload = encode_body({name: value for name, value in body.items() if name != "model"})
        if stream:
            return await self._stream(request, model, body, targets, payload, started, key)
        error: MuxtuiError | None = None
        for index, target in enumerate(targets):
            if index:
                observer.fallback(model)
            try:
                reply = await self.engine.send_chat_to(target, payload)
            except MuxtuiError as exc:
                error = exc
                if not may_fall_back(exc):
                    break
                continue
            observer.finished(model, "ok", *usage_of(reply.parsed))
            if key is not None and index == 0 and self.cache is not None:
                self.later(self.cache.put(key, reply.parsed))
            if self.history:
                self._record(model, body["messages"], reply.parsed)
            response = web.Response(
                body=reply.content, status=reply.status, content_type="application/json"
            )
            if key is not None:
                response.headers[HEADER] = "miss"
            return response
        return self._failed(model, error)

    async def _plan(self, model: str) -> list[Target]:
        try:
            return await self.engine.plan(model)
        except UnknownModelError as exc:
            raise ServeError(
                404,
                f"unknown model '{exc.name}': GET /v1/models lists the models",
                "model_not_found",
            ) from None
        except MuxtuiError as exc:
            raise from_engine(exc, self.engine.secrets()) from None

    def _failed(self, model: str, error: MuxtuiError | None) -> web.Response:
        answer = (
            from_engine(error, self.engine.secrets())
            if error is not None
            else ServeError(502, "no route to the model", "upstream_error")
        )
        self.observer.finished(model, answer.code, 0, 0)
        return error_response(answer)

    async def _hit(
        self,
        request: web.Request,
        model: str,
        body: dict[str, Any],
        completion: dict[str, Any],
        stream: bool,
        started: float,
    ) -> web.StreamResponse:
        if self.history:
            self._record(model, body["messages"], completion)
        if not stream:
            self.observer.finished(model, "ok", *usage_of(completion))
            response = web.Response(body=whole_body(completion), content_type="application/json")
            response.headers[HEADER] = "hit"
            return response
        streamed = web.StreamResponse(headers={**_SSE_HEADERS, HEADER: "hit"})
        outcome = "ok"
        try:
            await streamed.prepare(request)
            self.observer.first_byte(model, time.perf_counter() - started)
            await streamed.write(replayed(completion, body))
            await streamed.write_eof()
        except ConnectionError:
            outcome = "client_closed"
        self.observer.finished(model, outcome, *usage_of(completion))
        return streamed

    async def _stream(
        self,
        request: web.Request,
        model: str,
        body: dict[str, Any],
        targets: list[Target],
        payload: bytes,
        started: float,
        key: str | None,
    ) -> web.StreamResponse:
        observer = self.observer
        upstream: UpstreamStream | None = None
        error: MuxtuiError | None = None
        answered_by = 0
        for index, target in enumerate(targets):
            if index:
                observer.fallback(model)
            try:
                upstream = await self.engine.open_chat_stream(target, payload)
                answered_by = index
                break
            except MuxtuiError as exc:
                error = exc
                if not may_fall_back(exc):
                    break
        if upstream is None:
            return self._failed(model, error)
        headers = {"Content-Type": upstream.content_type, "Cache-Control": "no-cache"}
        if key is not None:
            headers[HEADER] = "miss"
        response = web.StreamResponse(status=upstream.status, headers=headers)
        outcome = "ok"
        first = upstream.first
        last = [b"", b"", first]  # the stream's last chunks, its usage read from them at the end
        keep = self.history or (key is not None and answered_by == 0)
        kept: list[bytes] | None = [first] if keep else None
        token = observer.token
        try:
            await response.prepare(request)
            now = time.perf_counter()
            observer.first_byte(model, now - started)
            await response.write(first)
            for _ in range(first.count(_DELTA) - 1):  # more events came with the first byte
                token(model, 0.0)
            previous = now
            write = response.write
            async for chunk in upstream:  # the bytes as they came: not re-split into events
                now = time.perf_counter()
                await write(chunk)
                events = chunk.count(_DELTA)
                if events:  # one gap per chunk; the events that came with it follow at once
                    token(model, now - previous)
                    for _ in range(events - 1):
                        token(model, 0.0)
                    previous = now
                last[0], last[1], last[2] = last[1], last[2], chunk
                if kept is not None:
                    kept.append(chunk)
        except ConnectionError:
            outcome = "client_closed"
        except ATTEMPT_FAILURES as exc:
            outcome = "error"  # text was delivered: never retried; the client is told in-band
            message = f"the upstream stream broke: {type(exc).__name__}"
            event = b"data: " + error_body(502, message, "stream_broken") + b"\n\n"
            await _write_quietly(response, event)
        finally:
            await upstream.aclose()
        observer.finished(model, outcome, *stream_usage(b"".join(last)[-_USAGE_TAIL:]))
        if kept is not None and outcome == "ok":
            self.later(self._keep_stream(model, body, kept, key if answered_by == 0 else None))
        if outcome != "client_closed":
            await _write_quietly(response, None)
        return response

    async def _keep_stream(
        self, model: str, body: dict[str, Any], chunks: list[bytes], key: str | None
    ) -> None:
        from muxtui.engine.cache.sse import assemble

        completion = assemble(stream_objects(chunks))
        if key is not None and self.cache is not None:
            await self.cache.put(key, completion)
        if self.history:
            self._record(model, body["messages"], completion)

    # --- work after the reply went out -------------------------------------------------------

    def _record(self, model: str, messages: object, completion: dict[str, Any]) -> None:
        """Store the exchange in the history (`[serve] history = true`)."""
        text, finish = reply_text(completion)
        self.later(self.engine.record_served(model, request_messages(messages), text, finish))

    def later(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in the background; its failure is logged, never raised."""
        task = asyncio.create_task(work, name="muxtui-serve-after")
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("serve: work after a reply failed: %s", type(exc).__name__)

    async def drain(self) -> None:
        """Wait for background work still running (at shutdown)."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


def usage_of(completion: dict[str, Any]) -> tuple[int, int]:
    """(prompt_tokens, completion_tokens) of a completion's usage; 0 for what it lacks."""
    usage = completion.get("usage")
    if not isinstance(usage, dict):
        return 0, 0
    prompt, done = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (prompt if isinstance(prompt, int) else 0, done if isinstance(done, int) else 0)


def stream_usage(tail: bytes) -> tuple[int, int]:
    """The usage the stream's last event with one reported (0, 0 if none)."""
    at = tail.rfind(b'"usage"')
    start = tail.rfind(b"data:", 0, at) if at >= 0 else -1
    if start < 0:
        return 0, 0
    end = tail.find(b"\n", at)
    try:
        event = _loads(tail[start + 5 : end if end >= 0 else None])
    except ValueError:
        return 0, 0
    return usage_of(event) if isinstance(event, dict) else (0, 0)


async def _write_quietly(response: web.StreamResponse, data: bytes | None) -> None:
    try:
        if data is None:
            await response.write_eof()
        else:
            await response.write(data)
    except (ConnectionError, RuntimeError):
        pass
