"""Ready chat bodies sent as given: endpoints picked by load, connections sized to the work.

The batch runner and `Engine.forward_chat` use it. Only `model` is set (to the provider's own
id); every other field goes to the server exactly as given, and the reply comes back as sent.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from muxtui.engine.backends.base import Endpoint, HTTPFailure, ProtocolFailure, error_from_response
from muxtui.engine.backends.ollama import OllamaBackend
from muxtui.engine.backends.openai import OpenAIBackend
from muxtui.engine.cache.store import encode
from muxtui.engine.errors import (
    AuthError,
    BadRequestError,
    LocalServerError,
    MuxtuiError,
    RateLimitedError,
    UnreachableError,
)
from muxtui.engine.retry import (
    ATTEMPT_FAILURES,
    AttemptFailure,
    RetryPolicy,
    classify,
    retry_delay,
)

if TYPE_CHECKING:
    from muxtui.engine.cache.store import ResponseCache
    from muxtui.engine.local.manager import LocalEndpoint, ServerManager
    from muxtui.engine.pool import ClientPool
    from muxtui.engine.retry import EndpointHealth
    from muxtui.engine.router import Router, Target

_loads = json.loads
# Finish reasons of a whole reply, worth caching ("content_filter", "error" and None are not).
WHOLE_FINISHES = frozenset({"stop", "length", "tool_calls", "function_call"})
_PROBE_TIMEOUT_S = 2.0


class PostedReply(Protocol):
    """A whole response: an `httpx.Response`, or serve's aiohttp one."""

    @property
    def status_code(self) -> int:
        """The HTTP status."""
        ...

    @property
    def headers(self) -> Mapping[str, str]:
        """The response headers (names in any case)."""
        ...

    @property
    def content(self) -> bytes:
        """The body, decoded from any content coding."""
        ...


class StreamedReply(Protocol):
    """A response whose body is still to be read: an `httpx.Response` sent with `stream=True`,
    or serve's aiohttp one. Transport failures are httpx's exception types either way."""

    @property
    def status_code(self) -> int:
        """The HTTP status."""
        ...

    @property
    def headers(self) -> Mapping[str, str]:
        """The response headers (names in any case)."""
        ...

    async def aread(self) -> bytes:
        """The rest of the body, whole."""
        ...

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The rest of the body, as it arrives."""
        ...

    async def aclose(self) -> None:
        """Release the connection (closed, unless the body was read to its end)."""
        ...


class ChatPoster(Protocol):
    """A backend that can POST a ready OpenAI-shaped chat body."""

    async def post_chat(self, body: bytes) -> PostedReply:
        """The whole response to one non-streamed chat body."""
        ...

    async def open_stream(self, body: bytes) -> StreamedReply:
        """The response to one chat body sent streamed, its body still to read (`serve` passes
        its bytes through)."""
        ...


# The wire protocols whose servers take OpenAI-shaped chat bodies (Ollama on its /v1 path).
_POSTERS: dict[str, type[OpenAIBackend] | type[OllamaBackend]] = {
    "openai": OpenAIBackend,
    "ollama": OllamaBackend,
}


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful reply: the body as the server sent it, and what it says it cost."""

    status: int
    content: bytes
    parsed: dict[str, Any]
    request_id: str  # the server's x-request-id header, or ""
    completion_tokens: int
    cached: bool = False  # from the response cache; no server was asked


def model_body(model_id: str, payload: bytes) -> bytes:
    """The body to send: `model` first, then the rest exactly as encoded in `payload`."""
    head = b'{"model":' + json.dumps(model_id).encode()
    return head + (b"}" if payload == b"{}" else b"," + payload[1:])


def read_reply(response: PostedReply) -> Reply:
    """A `Reply`, or the failure an attempt raises for an error status or a non-completion."""
    content = response.content
    if response.status_code >= 400:
        raise error_from_response(response, content)
    try:
        parsed = _loads(content)
    except ValueError:
        raise ProtocolFailure("an OpenAI-compatible chat completion", content[:200]) from None
    if not isinstance(parsed, dict) or "choices" not in parsed:
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if error:  # some servers report failures inside a 200
            code = error.get("code") if isinstance(error, dict) else None
            status = code if isinstance(code, int) and 400 <= code < 600 else 502
            raise HTTPFailure(status, content, dict(response.headers), "application/json")
        raise ProtocolFailure("an OpenAI-compatible chat completion", content[:200])
    usage = parsed.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return Reply(
        response.status_code,
        content,
        parsed,
        response.headers.get("x-request-id", ""),
        tokens if isinstance(tokens, int) else 0,
    )


def _in_flight(shard: Shard) -> int:
    return shard.in_flight


def error_code(exc: MuxtuiError) -> str:
    """A short code for an error record, from the typed error."""
    for kind, code in (
        (RateLimitedError, "rate_limited"),
        (AuthError, "auth_failed"),
        (BadRequestError, "bad_request"),
        (UnreachableError, "unreachable"),
        (LocalServerError, "local_server_failed"),
    ):
        if isinstance(exc, kind):
            return code
    return "server_error"


class Shard:
    """One of an endpoint's clients (see `ClientPool.shards`) and its requests in flight."""

    __slots__ = ("in_flight", "poster")

    def __init__(self, poster: ChatPoster) -> None:
        self.poster = poster
        self.in_flight = 0


class Route:
    """Where one model's requests go: its endpoints, their weights, and clients for each."""

    def __init__(self, forwarder: Forwarder, target: Target, connections: int) -> None:
        self.target = target
        self.local = target.local
        self.model_id = target.model_id  # a local server's own id once it is known
        self.connections = connections
        self.weights: dict[str, float] = {e.base_url: 1.0 for e in target.endpoints}
        self._forwarder = forwarder
        self._shards: dict[str, list[Shard]] = {}
        self._local: dict[str, Endpoint] = {}
        self._turns = itertools.count()

    def shard(self, endpoint: Endpoint) -> Shard:
        """The endpoint's client with the fewest requests in flight.

        The clients have room for `connections` (else the provider's or the config's limit)
        between them: a batch of 16 opens 16 connections.
        """
        shards = self._shards.get(endpoint.base_url)
        if shards is None:
            limit = self.connections or self.target.max_connections
            posters = self._forwarder.posters(
                self.target, endpoint, limit or self._forwarder.default_connections
            )
            shards = self._shards[endpoint.base_url] = [Shard(poster) for poster in posters]
        if len(shards) == 1:
            return shards[0]
        return min(shards, key=_in_flight)

    def local_endpoint(self, local: LocalEndpoint) -> Endpoint:
        """The endpoint of a leased local server (its port changes if it restarts)."""
        endpoint = self._local.get(local.base_url)
        if endpoint is None:
            base_url = local.base_url.rstrip("/")
            endpoint = self._local[local.base_url] = Endpoint(
                self.target.name, base_url, api_key=local.api_key, local=True
            )
        return endpoint

    def pick(self, health: dict[str, EndpointHealth]) -> Endpoint:
        """The endpoint with the least load for its weight (slots), passing over cooling ones."""
        endpoints = self.target.endpoints
        if len(endpoints) == 1:
            return endpoints[0]
        now = time.monotonic()
        start = next(self._turns) % len(endpoints)  # rotation breaks ties: round-robin
        best, best_load = endpoints[start], float("inf")
        for offset in range(len(endpoints)):
            endpoint = endpoints[(start + offset) % len(endpoints)]
            record = health[endpoint.base_url]
            load = (record.in_flight + 1) / self.weights[endpoint.base_url]
            if record.cooling(now):
                load += 1e6  # only when every endpoint is cooling
            if load < best_load:
                best, best_load = endpoint, load
        return best


class Forwarder:
    """Sends ready bodies over the engine's pool, router health and local-server leases."""

    def __init__(
        self,
        pool: ClientPool,
        router: Router,
        servers: ServerManager,
        policy: RetryPolicy,
        default_connections: int,
        cache: ResponseCache | None = None,
    ) -> None:
        self.pool = pool
        self.router = router
        self.servers = servers
        self.policy = policy
        self.default_connections = default_connections  # per endpoint, when nothing says
        self.cache = cache
        self._kept: dict[tuple[object, ...], Route] = {}

    def posters(self, target: Target, endpoint: Endpoint, connections: int) -> list[ChatPoster]:
        """The posters (clients) of one endpoint, with room for `connections` between them."""
        make = _POSTERS[target.kind]
        return [
            make(client, endpoint) for client in self.pool.shards(endpoint.base_url, connections)
        ]

    def route(self, target: Target, connections: int = 0) -> Route:
        """A route for `target`; `connections` per endpoint (0: the config's limit)."""
        return Route(self, target, connections)

    def kept_route(self, target: Target) -> Route:
        """The route of `target`, made once and kept (its clients, a local server's own id),
        for one-off requests (`forward_chat`, serve) rather than a batch's own routes."""
        endpoints = tuple((e.base_url, e.api_key) for e in target.endpoints)
        key = (target.kind, target.provider, target.name, target.model_id, endpoints)
        route = self._kept.get(key)
        if route is None:
            route = self._kept[key] = self.route(target)
        return route

    async def learn_model_id(self, route: Route) -> None:
        """A local route's server's own model id, once (its server is started if it is cold)."""
        target = route.target
        if target.local and route.model_id == target.model_id:
            async with self.servers.acquire(target.name) as local:
                route.model_id = local.model_id or target.model_id

    async def send(self, route: Route, body: bytes, cache_key: str | None = None) -> Reply:
        """Send `body` until it succeeds, retrying what may pass; raises the final typed error.

        With a `cache_key`, a cached reply is returned without sending, and a whole reply is
        stored for the next time.
        """
        if cache_key is not None:
            hit = await self.cached(cache_key)
            if hit is not None:
                return hit
        reply = await self._send(route, body)
        if cache_key is not None:
            await self.keep(cache_key, reply)
        return reply

    async def cached(self, cache_key: str) -> Reply | None:
        """The cached reply for `cache_key`, or None."""
        completion = await self.cache.get(cache_key) if self.cache is not None else None
        if completion is None:
            return None
        usage = completion.get("usage")
        tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
        content = encode(completion)
        count = tokens if isinstance(tokens, int) else 0
        return Reply(200, content, completion, "", count, cached=True)

    async def keep(self, cache_key: str, reply: Reply) -> None:
        """Store a whole reply (every choice finished) under `cache_key`."""
        if self.cache is None or reply.cached or reply.status != 200:
            return
        choices = reply.parsed.get("choices")
        if not isinstance(choices, list) or not choices:
            return
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("finish_reason") not in WHOLE_FINISHES:
                return
        await self.cache.put(cache_key, reply.parsed)

    async def _send(self, route: Route, body: bytes) -> Reply:
        attempt = 0
        health = {e.base_url: self.router.health(e.base_url) for e in route.target.endpoints}
        while True:
            if route.local:
                async with self.servers.acquire(route.target.name) as local:
                    endpoint = route.local_endpoint(local)
                    outcome = await self._attempt(route, endpoint, body)
                    if not isinstance(outcome, Reply):
                        self.servers.owner.failed(local)  # through serve: is it still there?
            else:
                endpoint = route.pick(health)
                outcome = await self._attempt(route, endpoint, body)
            if isinstance(outcome, Reply):
                return outcome
            await asyncio.sleep(retry_delay(self.policy, outcome, endpoint, attempt, ""))
            attempt += 1

    async def _attempt(
        self, route: Route, endpoint: Endpoint, body: bytes
    ) -> Reply | AttemptFailure:
        health = self.router.health(endpoint.base_url)
        shard = route.shard(endpoint)
        health.in_flight += 1
        shard.in_flight += 1
        try:
            reply = read_reply(await shard.poster.post_chat(body))
        except ATTEMPT_FAILURES as exc:
            health.failed(self.policy)
            return classify(exc, endpoint)
        finally:
            health.in_flight -= 1
            shard.in_flight -= 1
        health.succeeded()
        return reply

    async def probe_slots(self, route: Route, endpoint: Endpoint) -> int | None:
        """The parallel slots a llama-server reports at `/props`; None when it says nothing."""
        if route.target.kind != "openai":
            return None
        root = endpoint.base_url.removesuffix("/v1")
        headers = dict(endpoint.headers)
        if endpoint.api_key:
            headers["Authorization"] = f"Bearer {endpoint.api_key}"
        client = self.pool.client(endpoint.base_url)
        try:
            response = await client.get(f"{root}/props", headers=headers, timeout=_PROBE_TIMEOUT_S)
            slots = response.json().get("total_slots") if response.status_code == 200 else None
        except (*ATTEMPT_FAILURES, ValueError, AttributeError):
            return None
        return (
            slots if isinstance(slots, int) and not isinstance(slots, bool) and slots > 0 else None
        )
