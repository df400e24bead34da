"""One streamed reply: routing, fallbacks, retries, a local server's lease, and its stats."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import replace
from typing import TYPE_CHECKING

from muxtui.engine.backends.base import Backend, ChatRequest, Endpoint
from muxtui.engine.backends.ollama import OllamaBackend
from muxtui.engine.backends.openai import OpenAIBackend
from muxtui.engine.cache.replies import replay_turn, turn_completion, turn_key, turn_wants_cache
from muxtui.engine.context import ContextOverflow, ModelRef, TurnFit, context_overflow
from muxtui.engine.errors import (
    AuthError,
    BadRequestError,
    LocalServerError,
    MuxtuiError,
    ProviderError,
    StreamInterruptedError,
)
from muxtui.engine.events import (
    ChatDelta,
    ChatEvent,
    ChatFinished,
    ChatMessage,
    ChatParams,
    ChatStatus,
)
from muxtui.engine.redact import redact, redact_error
from muxtui.engine.reply import ReplyMeter, hold_local, whole_reply
from muxtui.engine.retry import ATTEMPT_FAILURES, classify, retry_delay

if TYPE_CHECKING:
    from muxtui.engine.core import Engine
    from muxtui.engine.local.manager import LocalEndpoint

BACKENDS: dict[str, type[Backend]] = {"openai": OpenAIBackend, "ollama": OllamaBackend}

# Errors the person must fix; trying a fallback model would only hide them.
_NO_FALLBACK = (AuthError, BadRequestError, StreamInterruptedError)


class ChatStreamer:
    """Streams replies for one engine, with one backend per endpoint over its pooled client."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._backends: dict[tuple[str, str, str, str], Backend] = {}

    async def stream(
        self, model: str, messages: Sequence[ChatMessage], params: ChatParams
    ) -> AsyncGenerator[ChatEvent, None]:
        """The events of one reply, as `Engine.chat` describes them."""
        engine = self.engine
        await engine.start()
        meter = ReplyMeter(time.monotonic())
        parts = meter.parts
        try:
            targets = await engine.plan(model)
            request_messages = tuple(messages)
            cache_key = await self._cache_key(targets[0].name, request_messages, params)
            if cache_key is not None:
                cached = await engine.response_cache.get(cache_key)
                if cached is not None:
                    provider = "local" if targets[0].local else targets[0].provider
                    for event in replay_turn(cached, targets[0].name, provider, meter.started_at):
                        yield event
                    return
            for position, target in enumerate(targets):
                try:
                    async with contextlib.AsyncExitStack() as held:
                        fixed_endpoint = None
                        if target.local:
                            lease: list[LocalEndpoint] = []
                            statuses = hold_local(engine.servers, target.name, held, lease)
                            async with aclosing(statuses):
                                async for status in statuses:
                                    yield ChatStatus(redact(status.message, engine.secrets()))
                            local = lease[0]
                            fixed_endpoint = Endpoint(
                                target.name,
                                local.base_url.rstrip("/"),
                                api_key=local.api_key,
                                local=True,
                            )
                            target = replace(target, model_id=local.model_id or target.model_id)
                        first = fixed_endpoint or engine.router.pick(target)
                        fit = await engine.context.fit(
                            ModelRef(target.name, target.kind, target.model_id, first),
                            request_messages,
                            params.max_tokens,
                            engine.pool.client(first.base_url, target.max_connections),
                        )
                        yield fit.event
                        request = _fitted_request(target.model_id, fit, params)
                        refitted = False
                        # The attempts are inlined rather than a generator of their own: every
                        # generator layer costs each streamed token another resume.
                        attempt = 0
                        while True:
                            endpoint = fixed_endpoint or (
                                first if attempt == 0 else engine.router.pick(target)
                            )
                            health = engine.router.health(endpoint.base_url)
                            backend = self.backend(target.kind, endpoint, target.max_connections)
                            failure = None
                            overflow: ContextOverflow | None = None
                            health.in_flight += 1
                            try:
                                stream = (
                                    backend.stream_chat(request)
                                    if params.stream
                                    else whole_reply(backend, request)
                                )
                                async with aclosing(stream):
                                    async for item in stream:
                                        if isinstance(item, ChatDelta):
                                            if not parts:
                                                meter.first_at = time.monotonic()
                                            parts.append(item.text)
                                            yield item
                                        else:
                                            meter.end = item
                            except ATTEMPT_FAILURES as exc:
                                overflow = None if parts or refitted else context_overflow(exc)
                                if overflow is None:
                                    failure = classify(exc, endpoint)
                            finally:
                                health.in_flight -= 1
                            if overflow is not None:  # too long: one tighter fit, sent at once
                                refitted = True
                                fit = engine.context.refit(fit, overflow)
                                yield fit.event
                                request = _fitted_request(target.model_id, fit, params)
                                overflow = None
                                continue
                            if failure is None:
                                health.succeeded()
                                meter.ended_at = time.monotonic()
                                meter.provider = "local" if target.local else endpoint.provider
                                break
                            health.failed(engine.retry_policy)
                            policy = engine.retry_policy
                            delay = retry_delay(policy, failure, endpoint, attempt, meter.text())
                            attempt += 1
                            message = (
                                f"{failure.error}; retrying in {delay:.1f} s "
                                f"({attempt}/{policy.retries})"
                            )
                            yield ChatStatus(redact(message, engine.secrets()))
                            await asyncio.sleep(delay)
                except (ProviderError, LocalServerError) as exc:
                    last = position == len(targets) - 1
                    if last or parts or isinstance(exc, _NO_FALLBACK):
                        raise
                    message = f"{exc}; trying {targets[position + 1].name}"
                    yield ChatStatus(redact(message, engine.secrets()))
                    continue
                client = engine.pool.client(first.base_url, target.max_connections)
                engine.context.count_later(fit, meter.text(), client)
                finished = ChatFinished(
                    meter.text(), meter.stats(target.name), meter.finish_reason()
                )
                stored = turn_completion(finished, target.model_id) if cache_key else None
                if cache_key and stored is not None and position == 0:  # not a fallback's reply
                    await engine.response_cache.put(cache_key, stored)
                yield finished
                return
        except MuxtuiError as exc:
            raise redact_error(exc, engine.secrets()) from exc.__cause__

    async def _cache_key(
        self, model: str, messages: Sequence[ChatMessage], params: ChatParams
    ) -> str | None:
        """The turn's cache key when the cache is on and its params ask for it."""
        engine = self.engine
        if engine.config.response_cache.backend == "off" or not turn_wants_cache(params):
            return None
        return turn_key(messages, params, await engine.model_identity(model))

    def backend(self, kind: str, endpoint: Endpoint, max_connections: int) -> Backend:
        """The pooled backend for one endpoint, made on first use."""
        key = (kind, endpoint.provider, endpoint.base_url, endpoint.api_key)
        backend = self._backends.get(key)
        if backend is None:
            client = self.engine.pool.client(endpoint.base_url, max_connections)
            backend = self._backends[key] = BACKENDS[kind](client, endpoint)
        return backend


def _fitted_request(model_id: str, fit: TurnFit, params: ChatParams) -> ChatRequest:
    """The request for what `fit` sends, its max_tokens cut to the room the fit left."""
    max_tokens = fit.max_tokens(params.max_tokens)
    if max_tokens != params.max_tokens:
        params = replace(params, max_tokens=max_tokens)
    return ChatRequest(model_id, tuple(fit.messages), params)
