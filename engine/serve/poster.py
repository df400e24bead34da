"""Serve's upstream hops over aiohttp's client: one `ClientSession` per endpoint.

Serve forwards through the same `Forwarder` as batch (routing, retries, cooldowns, endpoint
health, local-server leases); only the poster underneath differs. aiohttp's client costs less
CPU per request than httpx's (measured on this machine through `muxtui serve`, see
engine/serve/app.py), and CPU per request is what serve's overhead is made of. The rest of the
engine keeps httpx (HTTP/2 to remote providers among other things); serve's upstream hops are
HTTP/1.1 with keep-alive.

Connections as engine/pool.py sizes them: `connections` per endpoint, idle ones kept for
KEEPALIVE_EXPIRY_S; a proxy from the environment only for non-loopback hosts; https verified
with the default CA bundle (the same one httpx uses). Transport failures are raised as httpx's
exception types, so `classify` and the retry policy treat them exactly as the httpx posters'.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import urlsplit

import aiohttp
import httpx
from yarl import URL

from muxtui.engine.backends import ollama, openai
from muxtui.engine.batch.forward import Forwarder
from muxtui.engine.pool import KEEPALIVE_EXPIRY_S, endpoint_key

if TYPE_CHECKING:
    from muxtui.engine.backends.base import Endpoint
    from muxtui.engine.batch.forward import ChatPoster
    from muxtui.engine.config import NetworkConfig
    from muxtui.engine.router import Target

_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
_TARGETS: dict[str, Callable[[Endpoint], tuple[str, dict[str, str]]]] = {
    "openai": openai.chat_target,
    "ollama": ollama.chat_target,
}


def _raise_as_httpx(exc: BaseException) -> NoReturn:
    """Raise an aiohttp (or socket) failure as the httpx error `classify` knows."""
    kind: type[httpx.TransportError]
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        kind = httpx.ConnectTimeout
    elif isinstance(exc, aiohttp.ClientConnectorError):
        kind = httpx.ConnectError
    elif isinstance(exc, asyncio.TimeoutError):
        kind = httpx.ReadTimeout
    elif isinstance(
        exc,
        aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | aiohttp.ClientResponseError,
    ):
        kind = httpx.RemoteProtocolError
    elif isinstance(exc, OSError):  # ClientOSError: a reset, a broken pipe
        kind = httpx.ReadError
    else:
        kind = httpx.TransportError
    raise kind(str(exc) or type(exc).__name__) from exc


_FAILURES = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


class WholeReply:
    """A whole response read from aiohttp (a `PostedReply`)."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status: int, headers: Mapping[str, str], content: bytes) -> None:
        self.status_code = status
        self.headers = headers
        self.content = content


class OpenReply:
    """An aiohttp response whose body is still to read (a `StreamedReply`)."""

    __slots__ = ("_response", "headers", "status_code")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code = response.status
        self.headers: Mapping[str, str] = response.headers

    async def aread(self) -> bytes:
        """The rest of the body, whole."""
        try:
            return await self._response.read()
        except _FAILURES as exc:
            _raise_as_httpx(exc)

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The rest of the body, as it arrives (whatever the socket had, no re-splitting)."""
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        readany = self._response.content.readany
        while True:
            try:
                chunk = await readany()
            except _FAILURES as exc:
                _raise_as_httpx(exc)
            if not chunk:
                return
            yield chunk

    async def aclose(self) -> None:
        """Back to the pool when the body was read to its end; the connection closed if not."""
        response = self._response
        if response.content.at_eof():
            response.release()
        else:
            response.close()


class AiohttpPoster:
    """POSTs ready OpenAI-shaped chat bodies to one endpoint over a shared `ClientSession`."""

    __slots__ = ("_post_headers", "_session", "_stream_headers", "_url")

    def __init__(self, session: aiohttp.ClientSession, kind: str, endpoint: Endpoint) -> None:
        url, headers = _TARGETS[kind](endpoint)
        self._session = session
        self._url = URL(url)
        content = {"Content-Type": "application/json"}
        self._post_headers = headers | content | {"Accept": "application/json"}
        self._stream_headers = headers | content
        if kind == "ollama":
            self._stream_headers["Accept"] = "text/event-stream"

    async def post_chat(self, body: bytes) -> WholeReply:
        """The whole response to one non-streamed chat body."""
        try:
            async with self._session.post(
                self._url, data=body, headers=self._post_headers, allow_redirects=False
            ) as response:
                content = await response.read()
                return WholeReply(response.status, response.headers, content)
        except _FAILURES as exc:
            _raise_as_httpx(exc)

    async def open_stream(self, body: bytes) -> OpenReply:
        """The response to one chat body sent streamed, its body still to read."""
        try:
            response = await self._session.post(
                self._url, data=body, headers=self._stream_headers, allow_redirects=False
            )
        except _FAILURES as exc:
            _raise_as_httpx(exc)
        return OpenReply(response)


class SessionPool:
    """aiohttp sessions per endpoint (scheme, host, port) and connection limit; `aclose()`."""

    def __init__(self, network: NetworkConfig) -> None:
        self._network = network
        self._sessions: dict[tuple[str, int], aiohttp.ClientSession] = {}
        self._tls: ssl.SSLContext | None = None
        self._closed = False

    def session(self, base_url: str, connections: int) -> aiohttp.ClientSession:
        """The session for `base_url` with room for `connections` requests at once."""
        key = (endpoint_key(base_url), max(1, connections))
        session = self._sessions.get(key)
        if session is None:
            if self._closed:
                raise RuntimeError("the engine is closed")
            session = self._sessions[key] = self._new_session(*key)
        return session

    def _new_session(self, key: str, connections: int) -> aiohttp.ClientSession:
        network = self._network
        tls: ssl.SSLContext | bool = False
        if key.startswith("https://"):
            if self._tls is None:
                self._tls = httpx.create_ssl_context()  # the CA bundle httpx's clients verify with
            tls = self._tls
        connector = aiohttp.TCPConnector(
            limit=connections,
            limit_per_host=0,
            keepalive_timeout=KEEPALIVE_EXPIRY_S,
            ssl=tls,
        )
        # Waiting for a free pooled connection is part of waiting for the reply (as in pool.py).
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=network.read_timeout,
            sock_connect=network.connect_timeout,
            sock_read=network.read_timeout,
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            # A proxy from the environment must never sit between us and a loopback server.
            trust_env=(urlsplit(key).hostname or "") not in _LOOPBACK_HOSTS,
            auto_decompress=True,
            raise_for_status=False,
        )

    def __len__(self) -> int:
        return len(self._sessions)

    async def aclose(self) -> None:
        """Close every session and its connections."""
        self._closed = True
        sessions, self._sessions = [*self._sessions.values()], {}
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


class ServeForwarder(Forwarder):
    """Batch's forwarder with aiohttp posters: one poster (session) per endpoint."""

    sessions: SessionPool  # set by ServeRoutes

    def posters(self, target: Target, endpoint: Endpoint, connections: int) -> list[ChatPoster]:
        """One aiohttp poster with room for `connections` requests at once."""
        session = self.sessions.session(endpoint.base_url, connections)
        return [AiohttpPoster(session, target.kind, endpoint)]
