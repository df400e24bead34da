"""Streamed chat bodies passed through byte for byte: retries only before the first byte.

`open_stream` sends a ready body over a batch `Route` (the same endpoint pick, pooled clients,
health records, cooldowns and local-server leases as `Forwarder.send`) and returns once the
upstream's first body bytes are in hand. Until then every failure is retried like a
non-streamed request (and the caller may move on to a fallback); after it nothing is retried.
The returned `UpstreamStream` holds the local server's lease and the endpoint's load until it
is closed, which also closes the upstream connection (a client that goes away ends it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from muxtui.engine.backends.base import HTTPFailure, ProtocolFailure, error_from_response
from muxtui.engine.retry import ATTEMPT_FAILURES, AttemptFailure, classify, retry_delay

if TYPE_CHECKING:
    from muxtui.engine.backends.base import Endpoint
    from muxtui.engine.batch.forward import Forwarder, Route, StreamedReply


class UpstreamStream:
    """An open upstream reply: status, content type, its first bytes and the rest."""

    def __init__(
        self,
        response: StreamedReply,
        first: bytes,
        rest: AsyncIterator[bytes],
        stack: contextlib.AsyncExitStack,
    ) -> None:
        self.status = response.status_code
        self.content_type = response.headers.get("content-type", "text/event-stream")
        self.request_id = response.headers.get("x-request-id", "")
        self.first = first
        self._rest = rest
        self._stack = stack

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._rest

    async def aclose(self) -> None:
        """Close the upstream response, release the lease and the endpoint's load."""
        await self._stack.aclose()


async def open_stream(forwarder: Forwarder, route: Route, body: bytes) -> UpstreamStream:
    """Send `body` streamed until its first bytes arrive, retrying what may pass; raises the
    final typed error (nothing has reached the client then, so a fallback may still answer)."""
    attempt = 0
    health = {e.base_url: forwarder.router.health(e.base_url) for e in route.target.endpoints}
    while True:
        stack = contextlib.AsyncExitStack()
        try:
            if route.local:
                local = await stack.enter_async_context(
                    forwarder.servers.acquire(route.target.name)
                )
                endpoint = route.local_endpoint(local)
            else:
                endpoint = route.pick(health)
            outcome = await _attempt(forwarder, route, endpoint, body, stack)
        except BaseException:
            await stack.aclose()
            raise
        if isinstance(outcome, UpstreamStream):
            return outcome
        await stack.aclose()
        await asyncio.sleep(retry_delay(forwarder.policy, outcome, endpoint, attempt, ""))
        attempt += 1


async def _attempt(
    forwarder: Forwarder,
    route: Route,
    endpoint: Endpoint,
    body: bytes,
    stack: contextlib.AsyncExitStack,
) -> UpstreamStream | AttemptFailure:
    health = forwarder.router.health(endpoint.base_url)
    shard = route.shard(endpoint)
    health.in_flight += 1
    shard.in_flight += 1

    def done() -> None:
        health.in_flight -= 1
        shard.in_flight -= 1

    stack.callback(done)
    poster = shard.poster
    try:
        response = await poster.open_stream(body)
        stack.push_async_callback(response.aclose)
        if response.status_code >= 400:
            raise error_from_response(response, await response.aread())
        ctype = response.headers.get("content-type", "")
        if "event-stream" not in ctype:  # a server that ignored "stream": its whole reply
            content = await response.aread()
            _check_whole(response, content)
            return UpstreamStream(response, content, _nothing(), stack)
        chunks = response.aiter_bytes()
        first = b""
        async for chunk in chunks:
            if chunk:
                first = chunk
                break
        if not first:
            raise ProtocolFailure("an event stream", b"(an empty body)")
    except ATTEMPT_FAILURES as exc:
        health.failed(forwarder.policy)
        return classify(exc, endpoint)
    health.succeeded()
    return UpstreamStream(response, first, chunks, stack)


def _check_whole(response: StreamedReply, content: bytes) -> None:
    """Raise for an error inside a 200 (some servers report failures so)."""
    if b'"error"' in content[:200] and b'"choices"' not in content:
        raise HTTPFailure(502, content, dict(response.headers), "application/json")


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing
