"""The Redis (or Valkey) reply cache: shared by every muxtui that points at the same server.

Values are compact JSON under `muxtui:reply:<key>`, written with a TTL (SET EX) when one is
set. When the server cannot be reached, requests go on uncached: that is logged once (the host
and port only: a URL can carry a password), `healthy` turns False, and the server is tried
again after `retry_s` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import time
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from muxtui.engine.cache.store import ResponseCache

log = logging.getLogger("muxtui.engine.cache")

KEY_PREFIX = "muxtui:reply:"
RETRY_S = 10.0
TIMEOUT_S = 1.0
_FAILURES = (RedisError, OSError, TimeoutError)


def public_address(url: str) -> str:
    """Where a Redis URL points, without user or password: "redis://host:port/db"."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the configured Redis URL"
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    return f"{parts.scheme}://{host}{port}{parts.path}"


class RedisCache(ResponseCache):
    """Replies in Redis/Valkey with a TTL; failures skip the cache and are retried later."""

    backend = "redis"

    def __init__(self, url: str, ttl: int, *, retry_s: float = RETRY_S) -> None:
        super().__init__(ttl)
        self.address = public_address(url)
        self.retry_s = retry_s
        self._url = url
        self._client: aioredis.Redis | None = None
        self._retry_at = 0.0
        self._closed = False

    def where(self) -> str:
        """Redis's host and port (never the URL: it may carry a password)."""
        return f"Redis at {self.address}"

    def _usable(self) -> aioredis.Redis | None:
        if self._closed or (not self.healthy and time.monotonic() < self._retry_at):
            return None
        if self._client is None:
            try:
                self._client = aioredis.Redis.from_url(
                    self._url,
                    socket_timeout=TIMEOUT_S,
                    socket_connect_timeout=TIMEOUT_S,
                    retry_on_timeout=False,
                )
            except (ValueError, *_FAILURES) as exc:
                self._down(exc)
                return None
        return self._client

    def _down(self, exc: BaseException) -> None:
        if self.healthy:
            reason = type(exc).__name__  # never str(exc): it may quote the URL
            log.warning(
                "response cache: Redis at %s is unreachable (%s); replies go uncached, "
                "trying again every %.0f s",
                self.address,
                reason,
                self.retry_s,
            )
        self.healthy = False
        self._retry_at = time.monotonic() + self.retry_s

    def _up(self) -> None:
        if not self.healthy:
            log.info("response cache: Redis at %s answers again", self.address)
            self.healthy = True

    async def _fetch(self, key: str) -> bytes | None:
        client = self._usable()
        if client is None:
            return None
        try:
            value = await client.get(KEY_PREFIX + key)
        except _FAILURES as exc:
            self._down(exc)
            return None
        self._up()
        return value if isinstance(value, bytes) else None

    async def _store(self, key: str, value: bytes) -> None:
        client = self._usable()
        if client is None:
            return
        try:
            # SET with EX is SETEX (redis-py deprecates the setex call, not the command).
            await client.set(KEY_PREFIX + key, value, ex=self.ttl or None)
        except _FAILURES as exc:
            self._down(exc)
            return
        self._up()

    async def aclose(self) -> None:
        """Close the connection pool."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(*_FAILURES):
                await client.aclose()
