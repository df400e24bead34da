"""`muxtui serve`'s HTTP app: OpenAI's chat API in front of the engine, plus model control.

Stack: aiohttp.web, chosen by measured overhead on this machine (2 shared CPU cores, loopback,
the upstream tests/fake_server.py, a minimal proxy in each stack forwarding through a pooled
httpx client; client, upstream and proxy on the same two cores; two rounds each):

    direct to the upstream        median 1.41 / 1.25 ms   c16 335 / 487 req/s
    aiohttp.web proxy             median 3.15 / 3.13 ms   c16 266 / 245 req/s
    uvicorn+httptools+uvloop ASGI median 3.25 / 3.00 ms   c16 225 / 205 req/s

Added latency is the same within noise (~1.8 ms, most of it httpx's client on the proxy side);
aiohttp kept ~15% more throughput at concurrency 16, is one package rather than three, and
brings what serve needs without a framework of ours on top: a body size limit
(`client_max_size`), streamed responses whose writes fail when the client goes away, and a
runner that binds before serving (so a port in use is one clear error).

Requests are parsed once (json.loads), re-encoded once without `model` (batch's
`encode_body`: compact, key order kept), and sent over the engine's pooled clients; replies go
back as the upstream sent them (non-streamed: its bytes; streamed: SSE bytes as they arrive).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from muxtui import __version__
from muxtui.engine.batch.plan import encode_body
from muxtui.engine.errors import MuxtuiError, UnknownModelError
from muxtui.engine.retry import ATTEMPT_FAILURES
from muxtui.engine.serve.auth import KeyCheck
from muxtui.engine.serve.control import Control
from muxtui.engine.serve.errors import (
    ServeError,
    error_body,
    from_engine,
    may_fall_back,
    parse_object,
)
from muxtui.engine.serve.observer import NullObserver, Observer
from muxtui.engine.serve.record import reply_text, request_messages, stream_text

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from muxtui.engine.core import Engine
    from muxtui.engine.router import Target
    from muxtui.engine.serve.upstream import UpstreamStream

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = logging.getLogger("muxtui.serve")
_loads = json.loads
_USAGE_TAIL = 4096  # bytes of a stream's end kept to read its usage from
_OPEN_PATHS = frozenset({"/health"})
_PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def error_response(error: ServeError) -> web.Response:
    """An OpenAI-shaped error answer."""
    return web.Response(
        body=error_body(error.status, error.message, error.code),
        status=error.status,
        content_type="application/json",
    )


class ServeApp:
    """The routes of `muxtui serve` over one engine."""

    def __init__(
        self,
        engine: Engine,
        *,
        key: str = "",
        observer: Observer | None = None,
        max_body_mb: float | None = None,
    ) -> None:
        self.engine = engine
        self.observer: Observer = observer or NullObserver()
        self._keys = KeyCheck(key)
        limit_mb = engine.config.serve.max_body_mb if max_body_mb is None else max_body_mb
        self.max_body = max(1, int(limit_mb * 1024 * 1024))
        self.history = engine.config.serve.history
        self.control = Control(engine, self._samples_wanted)
        self.on_samples_wanted: Callable[[], None] | None = None  # starts the monitor
        self._background: set[asyncio.Task[None]] = set()
        self._health = json.dumps({"status": "ok", "pid": _pid(), "version": __version__}).encode()

    def application(self) -> web.Application:
        """The aiohttp application (no access log is configured: nothing secret is written)."""
        app = web.Application(middlewares=[self._guard], client_max_size=self.max_body)
        add = app.router
        control = self.control
        add.add_post("/v1/chat/completions", self.chat)
        add.add_get("/v1/models", control.models)
        add.add_get("/health", self.health)
        add.add_get("/metrics", self.metrics)
        add.add_get("/running", control.running)
        add.add_post("/api/models/unload", control.unload_all)
        add.add_post("/api/models/unload/{model:.+}", control.unload_one)
        add.add_get("/muxtui/v1/models", control.muxtui_models)
        add.add_get("/muxtui/v1/sample", control.sample)
        add.add_post("/muxtui/v1/models/{name:.+}/load", control.load)
        add.add_post("/muxtui/v1/models/{name:.+}/unload", control.unload_one)
        add.add_post("/muxtui/v1/models/{name:.+}/pin", control.pin)
        return app

    # --- the guard: key, and errors in OpenAI's shape ----------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            self._keys.required
            and request.path not in _OPEN_PATHS
            and not self._keys.allows(request.headers.get("Authorization"))
        ):
            return error_response(
                ServeError(
                    401,
                    "missing or wrong key: send Authorization: Bearer KEY",
                    "invalid_api_key",
                )
            )
        try:
            return await handler(request)
        except ServeError as exc:
            return error_response(exc)
        except web.HTTPRequestEntityTooLarge:
            return error_response(self._too_large())
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(
                ServeError(
                    exc.status, exc.reason, "not_found" if exc.status == 404 else "http_error"
                )
            )

    def _samples_wanted(self) -> None:
        if self.on_samples_wanted is not None:
            self.on_samples_wanted()

    def _too_large(self) -> ServeError:
        limit = self.max_body / (1024 * 1024)
        return ServeError(
            413,
            f"the request body is over {limit:g} MiB; send less, or raise [serve] max_body_mb",
            "request_too_large",
        )

    # --- chat ------------------------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/chat/completions`: forwarded as given, streamed or not, with fallbacks."""
        started = time.perf_counter()
        length = request.content_length
        if length is not None and length > self.max_body:
            raise self._too_large()
        body = parse_object(await request.read())
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ServeError(400, "the body needs a `model` (a muxtui model name)", "missing_model")
        if not isinstance(body.get("messages"), list):
            raise ServeError(400, "the body needs `messages` (a list)", "missing_messages")
        targets = await self._plan(model)
        payload = encode_body({name: value for name, value in body.items() if name != "model"})
        observer = self.observer
        observer.request_started(model)
        if body.get("stream") is True:
            return await self._stream(request, model, body, targets, payload, started)
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
            prompt, completion = _usage(reply.parsed.get("usage"))
            observer.finished(model, "ok", prompt, completion)
            if self.history:
                self._record(model, body["messages"], *reply_text(reply.parsed))
            return web.Response(
                body=reply.content, status=reply.status, content_type="application/json"
            )
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

    async def _stream(
        self,
        request: web.Request,
        model: str,
        body: dict[str, Any],
        targets: list[Target],
        payload: bytes,
        started: float,
    ) -> web.StreamResponse:
        observer = self.observer
        upstream: UpstreamStream | None = None
        error: MuxtuiError | None = None
        for index, target in enumerate(targets):
            if index:
                observer.fallback(model)
            try:
                upstream = await self.engine.open_chat_stream(target, payload)
                break
            except MuxtuiError as exc:
                error = exc
                if not may_fall_back(exc):
                    break
        if upstream is None:
            return self._failed(model, error)
        response = web.StreamResponse(
            status=upstream.status,
            headers={"Content-Type": upstream.content_type, "Cache-Control": "no-cache"},
        )
        outcome = "ok"
        tail = upstream.first[-_USAGE_TAIL:]
        kept: list[bytes] | None = [upstream.first] if self.history else None
        try:
            await response.prepare(request)
            now = time.perf_counter()
            observer.first_byte(model, now - started)
            await response.write(upstream.first)
            previous = now
            async for chunk in upstream:
                now = time.perf_counter()
                observer.token(model, now - previous)
                previous = now
                await response.write(chunk)
                tail = (tail + chunk)[-_USAGE_TAIL:]
                if kept is not None:
                    kept.append(chunk)
        except ConnectionError:
            outcome = "client_closed"
        except ATTEMPT_FAILURES as exc:
            outcome = "error"  # text was delivered: never retried; the client is told in-band
            message = f"the upstream stream broke: {type(exc).__name__}"
            await _write_quietly(
                response, b"data: " + error_body(502, message, "stream_broken") + b"\n\n"
            )
        finally:
            await upstream.aclose()
        prompt, completion = _stream_usage(tail)
        observer.finished(model, outcome, prompt, completion)
        if kept is not None:
            self._record(model, body["messages"], *stream_text(kept))
        if outcome != "client_closed":
            await _write_quietly(response, None)
        return response

    def _record(self, model: str, messages: object, text: str, finish: str) -> None:
        """Store the exchange in the background, after the reply went out."""
        call = self.engine.record_served(model, request_messages(messages), text, finish)
        task = asyncio.create_task(call, name="muxtui-serve-record")
        self._background.add(task)
        task.add_done_callback(self._recorded)

    def _recorded(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("serve: a chat was not stored in the history: %s", type(exc).__name__)

    async def drain(self) -> None:
        """Wait for history writes still running (at shutdown)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # --- health and metrics ------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        """`GET /health`: answers while serve runs."""
        return web.Response(body=self._health, content_type="application/json")

    async def metrics(self, request: web.Request) -> web.Response:
        """`GET /metrics`: the Prometheus text of the observer, when it renders one."""
        if self.on_samples_wanted is not None:
            self.on_samples_wanted()
        render = getattr(self.observer, "render", None)
        text = render() if callable(render) else b""
        data = text.encode() if isinstance(text, str) else bytes(text)
        ctype = getattr(self.observer, "content_type", _PROMETHEUS_TEXT)
        return web.Response(body=data, headers={"Content-Type": str(ctype)})


def _pid() -> int:
    import os

    return os.getpid()


def _usage(usage: object) -> tuple[int, int]:
    if not isinstance(usage, dict):
        return 0, 0
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (
        prompt if isinstance(prompt, int) else 0,
        completion if isinstance(completion, int) else 0,
    )


def _stream_usage(tail: bytes) -> tuple[int, int]:
    """The usage the stream's last event with one reported (0, 0 if none)."""
    at = tail.rfind(b'"usage"')
    if at < 0:
        return 0, 0
    start = tail.rfind(b"data:", 0, at)
    end = tail.find(b"\n", at)
    if start < 0:
        return 0, 0
    try:
        event = _loads(tail[start + 5 : end if end >= 0 else None])
    except ValueError:
        return 0, 0
    return _usage(event.get("usage")) if isinstance(event, dict) else (0, 0)


async def _write_quietly(response: web.StreamResponse, data: bytes | None) -> None:
    try:
        if data is None:
            await response.write_eof()
        else:
            await response.write(data)
    except (ConnectionError, RuntimeError):
        pass
