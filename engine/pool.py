"""One long-lived `httpx.AsyncClient` per endpoint, so connections are reused across requests."""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

# Imported before httpx on purpose: it keeps httpx's command line (and rich) unloaded.
import muxtui.engine.backends.base  # noqa: F401

# isort: split
import httpx

from muxtui.engine.config import NetworkConfig

_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
# Idle connections live this long: a person's pause between chat turns should not cost a new
# TLS handshake to a remote provider (httpx's default is 5 s).
KEEPALIVE_EXPIRY_S = 30.0


def endpoint_key(base_url: str) -> str:
    """The pool key of a base URL: scheme, host and port (paths on one host share a pool)."""
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class ClientPool:
    """Hands out one client per endpoint for the life of the engine; `aclose()` closes them."""

    def __init__(self, network: NetworkConfig) -> None:
        self._network = network
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._limits: dict[str, int] = {}
        # Clients replaced by a larger one; they may still carry a stream, so they close last.
        self._retired: list[httpx.AsyncClient] = []
        self._tls: ssl.SSLContext | None = None
        self._closed = False

    def client(self, base_url: str, max_connections: int = 0) -> httpx.AsyncClient:
        """The client for `base_url`, created on first use."""
        key = endpoint_key(base_url)
        client = self._clients.get(key)
        if client is None:
            connections = max(1, max_connections or self._network.max_connections)
            keepalive = min(self._network.max_keepalive, connections)
            client = self._add(key, connections, keepalive)
        return client

    def reserve(self, base_url: str, connections: int) -> httpx.AsyncClient:
        """The client for `base_url` with room for `connections` requests at once, all kept alive.

        A client with a smaller limit is replaced (new requests use the larger one), so a batch
        asking for 16 at once gets 16 connections rather than queueing behind the default 10.
        """
        key = endpoint_key(base_url)
        client = self._clients.get(key)
        if client is not None and self._limits[key] >= connections:
            return client
        if client is not None:
            self._retired.append(client)
        return self._add(key, max(1, connections), max(1, connections))

    def limit(self, base_url: str) -> int:
        """The connection limit of `base_url`'s client now; 0 before it has one."""
        return self._limits.get(endpoint_key(base_url), 0)

    def _add(self, key: str, connections: int, keepalive: int) -> httpx.AsyncClient:
        if self._closed:
            raise RuntimeError("the engine is closed")
        client = self._clients[key] = self._new_client(key, connections, keepalive)
        self._limits[key] = connections
        return client

    def _new_client(self, key: str, connections: int, keepalive: int) -> httpx.AsyncClient:
        network = self._network
        limits = httpx.Limits(
            max_connections=connections,
            max_keepalive_connections=max(1, keepalive),
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
        clients = [*self._clients.values(), *self._retired]
        self._clients, self._retired = {}, []
        await asyncio.gather(*(client.aclose() for client in clients), return_exceptions=True)
