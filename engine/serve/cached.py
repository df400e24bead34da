"""Serve's use of the response cache (engine/cache/): look up, replay, store.

Consulted when the body asks for it (`wants_cache`: temperature 0, a seed, or the request
header `x-muxtui-cache: force`; `no-store` skips it), keyed by the body and the real identity of
the model asked for (`Engine.model_identity`). A hit answers without any server: whole, or
replayed as proper SSE chunks. A miss answered by that model itself (not a fallback) with every
choice finished is stored after the reply went out; a streamed one is assembled first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from muxtui.engine.backends.openai import SSEDecoder
from muxtui.engine.batch.forward import WHOLE_FINISHES
from muxtui.engine.cache.key import cache_key, wants_cache
from muxtui.engine.cache.sse import assemble, replay
from muxtui.engine.cache.store import encode
from muxtui.engine.errors import MuxtuiError

if TYPE_CHECKING:
    from muxtui.engine.cache.store import ResponseCache
    from muxtui.engine.core import Engine

HEADER = "x-muxtui-cache"


class ServeCache:
    """The engine's response cache as serve uses it."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._cache: ResponseCache | None = None

    @property
    def store(self) -> ResponseCache:
        """The engine's cache (opened on first use)."""
        if self._cache is None:
            self._cache = self._engine.response_cache
        return self._cache

    async def key(self, model: str, body: Mapping[str, Any], header: str | None) -> str | None:
        """The cache key for this request, or None when the cache is not to be used."""
        if not wants_cache(body, header):
            return None
        try:
            identity = await self._engine.model_identity(model)
        except MuxtuiError:
            return None
        return cache_key(body, identity)

    async def get(self, key: str) -> dict[str, Any] | None:
        """The cached completion, or None (never raises)."""
        return await self.store.get(key)

    async def put(self, key: str, completion: dict[str, Any]) -> None:
        """Store a completion whose every choice finished (others are left out)."""
        choices = completion.get("choices")
        if not isinstance(choices, list) or not choices:
            return
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("finish_reason") not in WHOLE_FINISHES:
                return
        await self.store.put(key, completion)

    async def put_stream(self, key: str, chunks: Sequence[bytes]) -> None:
        """Assemble a streamed reply's SSE bytes and store it."""
        completion = assemble(stream_objects(chunks))
        await self.put(key, completion)


def whole_body(completion: dict[str, Any]) -> bytes:
    """A cached completion as a non-streamed reply's body."""
    return encode(completion)


def replayed(completion: dict[str, Any], body: Mapping[str, Any]) -> bytes:
    """A cached completion as a stream's SSE bytes: several chunks, usage if asked, [DONE]."""
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return b"".join(replay(completion, include_usage=include_usage))


def stream_objects(chunks: Sequence[bytes]) -> list[dict[str, Any]]:
    """The JSON objects of a stream's SSE events ([DONE] and anything not JSON left out)."""
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)] + decoder.close()
    objects = []
    for event in events:
        if event.strip() == b"[DONE]":
            continue
        try:
            data = json.loads(event)
        except ValueError:
            continue
        if isinstance(data, dict):
            objects.append(data)
    return objects
