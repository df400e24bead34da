"""Where cached replies live: SQLite (the default), Redis/Valkey (shared), or nowhere ("off").

Every backend keeps a small in-process LRU of recent entries in front of its store, so a repeated
request is answered without a thread hop or a round trip. Failures never reach callers: a store
that cannot be used is logged once, reports `healthy = False`, and the request goes on uncached.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from muxtui.engine.config import ResponseCacheConfig
    from muxtui.engine.paths import Paths

LRU_ENTRIES = 512
LRU_BYTES = 16 * 2**20
# A reply read from the store is kept in the LRU this long at most: the store's own expiry and
# evictions (by another process, too) are not known here.
LRU_FETCHED_S = 300
_loads = json.loads


def encode(completion: dict[str, Any]) -> bytes:
    """A completion as stored: compact JSON, UTF-8."""
    return json.dumps(completion, separators=(",", ":"), ensure_ascii=False).encode()


def decode(value: bytes | str) -> dict[str, Any] | None:
    """A stored completion, or None if the value is not a JSON object."""
    try:
        parsed = _loads(value)
    except (ValueError, UnicodeDecodeError):
        return None
    return parsed if isinstance(parsed, dict) else None


class RecentReplies:
    """An LRU of encoded replies with their expiry, bounded in count and bytes."""

    def __init__(self, entries: int = LRU_ENTRIES, max_bytes: int = LRU_BYTES) -> None:
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._entries = entries
        self._max_bytes = max_bytes
        self._bytes = 0

    def get(self, key: str) -> bytes | None:
        """The value kept for `key`, unless absent or expired."""
        item = self._items.get(key)
        if item is None:
            return None
        expires, value = item
        if expires and expires < time.time():
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return value

    def put(self, key: str, value: bytes, expires: float) -> None:
        """Keep `value` until `expires` (unix time; 0 = no expiry) or until pushed out."""
        if len(value) > self._max_bytes // 4:
            return
        self._drop(key)
        self._items[key] = (expires, value)
        self._bytes += len(value)
        while len(self._items) > self._entries or self._bytes > self._max_bytes:
            oldest = next(iter(self._items))
            self._drop(oldest)

    def _drop(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self._bytes -= len(item[1])


class ResponseCache(ABC):
    """Cached chat completions by key; `get`/`put` never raise, whatever the store does."""

    backend = "off"

    def __init__(self, ttl: int = 0) -> None:
        self.ttl = max(0, ttl)
        self.healthy = True
        self.hits = 0
        self.misses = 0
        # Told (in the event loop) when `healthy` changes: the engine turns it into an event.
        self.on_health: Callable[[bool], None] | None = None
        self._told_healthy = True
        self._recent = RecentReplies()

    def where(self) -> str:
        """What the cache lives in, for people: no secret (a Redis URL's password) in it."""
        return self.backend

    def _tell_health(self) -> None:
        if self.healthy is not self._told_healthy:
            self._told_healthy = self.healthy
            if self.on_health is not None:
                self.on_health(self.healthy)

    def _expires(self) -> float:
        return time.time() + self.ttl if self.ttl else 0.0

    async def get(self, key: str) -> dict[str, Any] | None:
        """The stored non-streamed chat.completion for `key`, or None."""
        value = self._recent.get(key)
        if value is None:
            value = await self._fetch(key)
            if value is not None:
                keep_s = min(self.ttl, LRU_FETCHED_S) if self.ttl else LRU_FETCHED_S
                self._recent.put(key, value, time.time() + keep_s)
        completion = decode(value) if value is not None else None
        if completion is None:
            self.misses += 1
        else:
            self.hits += 1
        self._tell_health()
        return completion

    async def put(self, key: str, completion: dict[str, Any]) -> None:
        """Store a whole completion under `key` (for `ttl` seconds when set)."""
        value = encode(completion)
        self._recent.put(key, value, self._expires())
        await self._store(key, value)
        self._tell_health()

    @abstractmethod
    async def _fetch(self, key: str) -> bytes | None: ...

    @abstractmethod
    async def _store(self, key: str, value: bytes) -> None: ...

    @abstractmethod
    async def aclose(self) -> None:
        """Finish pending writes and let go of files and connections."""


class NoCache(ResponseCache):
    """`backend = "off"`: nothing is kept, every lookup misses."""

    backend = "off"

    async def get(self, key: str) -> dict[str, Any] | None:
        """Always None."""
        return None

    async def put(self, key: str, completion: dict[str, Any]) -> None:
        """Nothing is kept."""

    async def _fetch(self, key: str) -> bytes | None:
        return None

    async def _store(self, key: str, value: bytes) -> None:
        return None

    async def aclose(self) -> None:
        """Nothing to close."""


def open_cache(config: ResponseCacheConfig, paths: Paths) -> ResponseCache:
    """The cache `[response_cache]` asks for; opening is lazy, so this never fails."""
    if config.backend == "redis":
        from muxtui.engine.cache.redis_store import RedisCache

        return RedisCache(config.url, config.ttl)
    if config.backend == "sqlite":
        from muxtui.engine.cache.sqlite_store import SqliteCache

        return SqliteCache(paths.response_cache_db, config.ttl, config.max_mb)
    return NoCache()
