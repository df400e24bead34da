"""Long-lived `httpx.AsyncClient`s per endpoint, so connections are reused across requests.

Chat gets one client per endpoint. Work that keeps many requests in flight (a batch) gets a
few small clients instead: httpcore rescans its whole pool twice per request, in a check that
is quadratic in the pool's size, so one pool of 16 connections spends more CPU on bookkeeping
than on the request (measured on loopback: four clients of 4 connections served 2x the
requests of one client of 16, at half the CPU per request).
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

import httpx

from muxtui.engine.config import NetworkConfig

_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
# Idle connections live this long: a person's pause between chat turns should not cost a new
# TLS handshake to a remote provider (httpx's default is 5 s).
KEEPALIVE_EXPIRY_S = 30.0
SHARD_CONNECTIONS = 4  # connections per client when a caller asks for many


def endpoint_key(base_url: str) -> str:
    """The pool key of a base URL: scheme, host and port (paths on one host share a pool)."""
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class ClientPool:
    """Hands out clients per endpoint for the life of the engine; `aclose()` closes them."""

    def __init__(self, network: NetworkConfig) -> None:
        self._network = network
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._shards: dict[str, tuple[httpx.AsyncClient, ...]] = {}
        self._shard_room: dict[str, int] = {}
        self._tls: ssl.SSLContext | None = None
        self._closed = False

    def client(self, base_url: str, max_connections: int = 0) -> httpx.AsyncClient:
        """The client for `base_url`, created on first use."""
        key = endpoint_key(base_url)
        client = self._clients.get(key)
        if client is None:
            if self._closed:
                raise RuntimeError("the engine is closed")
            client = self._clients[key] = self._new_client(key, max_connections)
        return client

    def shards(self, base_url: str, connections: int) -> tuple[httpx.AsyncClient, ...]:
        """Clients for `base_url` with room for `connections` requests at once between them.

        Each holds at most SHARD_CONNECTIONS connections, all kept alive; asking for more
        later adds clients (the ones in use stay), so a batch of 16 gets 16 connections.
        """
        key = endpoint_key(base_url)
        clients = self._shards.get(key, ())
        room = self._shard_room.get(key, 0)
        while room < connections:
            if self._closed:
                raise RuntimeError("the engine is closed")
            size = min(SHARD_CONNECTIONS, connections - room)
            clients += (self._new_client(key, size, keepalive=size),)
            room += size
        self._shards[key], self._shard_room[key] = clients, room
        return clients

    def _new_client(self, key: str, max_connections: int, keepalive: int = 0) -> httpx.AsyncClient:
        network = self._network
        connections = max(1, max_connections or network.max_connections)
        limits = httpx.Limits(
            max_connections=connections,
            max_keepalive_connections=max(1, keepalive or min(network.max_keepalive, connections)),
            keepalive_expiry=KEEPALIVE_EXPIRY_S,
        )
        # Waiting for a free pooled connection is part of waiting for the reply.
        timeout = httpx.Timeout(network.read_timeout, connect=network.connect_timeout)
        host = urlsplit(key).hostname or ""
        secure = key.startswith("https://")
        return httpx.AsyncClient(
            limits=limits,
            timeout=timeout,
            # Loading the CA bundle costs 30-70 ms per client: https clients share one context,
            # and a plain-http client (a local server on a new port) never negotiates TLS.
            verify=self._tls_context() if secure else False,
            http2=network.http2 and secure,
            # A proxy from the environment must never sit between us and a loopback server.
            trust_env=host not in _LOOPBACK_HOSTS,
            follow_redirects=False,
        )

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = httpx.create_ssl_context()
        return self._tls

    def __len__(self) -> int:
        return len(self._clients)

    async def aclose(self) -> None:
        """Close every client and its connections."""
        self._closed = True
        clients = [*self._clients.values()]
        clients += [client for shards in self._shards.values() for client in shards]
        self._clients, self._shards, self._shard_room = {}, {}, {}
        await asyncio.gather(*(client.aclose() for client in clients), return_exceptions=True)
