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
runner that binds before serving (so a port in use is one clear error). aiohttp on uvloop
measured no better (CPU per request through serve 2.0-2.4 ms against 1.8-2.3 ms on asyncio's
loop), so serve uses asyncio's.

`muxtui serve` itself (a subprocess; upstream in its own process, 64-token replies;
bench/serve.py): with httpx for the upstream hop it added +1.9 ms median per non-streamed
request, +6.4 ms per 64-token stream and managed 0.13x the direct throughput at concurrency 16.
Its upstream hops now use aiohttp's client (engine/serve/poster.py; the rest of the engine
keeps httpx): +0.5-0.6 ms, +1.1-1.3 ms per stream, 0.3x at concurrency 16 against an upstream
that answers at once (0.94x against one that answers after 20 ms, with 16 upstream
connections). A bare aiohttp proxy doing nothing, measured the same way, adds +0.7 ms, +0.8 ms
and manages 0.3-0.5x: what is left is the second loopback hop (two more sends and receives, costly
system calls in this VM) and aiohttp's server and client, ~0.6 ms of CPU per request, of which
serve's own code (plan, parse, encode, route, observer) is ~0.1 ms. At concurrency 16 the
client, the upstream and serve share the 2 cores, so against an upstream that costs nothing the
ratio is bound by serve's CPU per request. Streamed chunks go through as they came (no
re-splitting into events); gc tuning (freeze after start, a larger first generation) measured
no difference in CPU per request. Every figure here moves by 2x with the other work on the
machine: bench/serve.py repeats them.

The chat route is engine/serve/chat.py, the model and server routes engine/serve/control.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from muxtui import __version__
from muxtui.engine.serve.auth import KeyCheck
from muxtui.engine.serve.chat import ChatRoute
from muxtui.engine.serve.control import Control
from muxtui.engine.serve.errors import ServeError, error_response
from muxtui.engine.serve.observer import NullObserver, Observer

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from muxtui.engine.core import Engine

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_OPEN_PATHS = frozenset({"/health"})
_PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


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
        self.chat = ChatRoute(engine, self.observer, self.max_body)
        self.control = Control(engine, self._samples_wanted)
        self.on_samples_wanted: Callable[[], None] | None = None  # starts the monitor
        self._health = json.dumps(
            {"status": "ok", "pid": os.getpid(), "version": __version__}
        ).encode()

    def application(self) -> web.Application:
        """The aiohttp application (no access log is configured: nothing secret is written)."""
        app = web.Application(middlewares=[self._guard], client_max_size=self.max_body)
        add = app.router
        control = self.control
        add.add_post("/v1/chat/completions", self.chat.handle)
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

    async def drain(self) -> None:
        """Wait for work after replies (cache stores, history writes) still running."""
        await self.chat.drain()

    # --- the guard: key, and errors in OpenAI's shape ----------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            self._keys.required
            and request.path not in _OPEN_PATHS
            and not self._keys.allows(request.headers.get("Authorization"))
        ):
            message = "missing or wrong key: send Authorization: Bearer KEY"
            return error_response(ServeError(401, message, "invalid_api_key"))
        try:
            return await handler(request)
        except ServeError as exc:
            return error_response(exc)
        except web.HTTPRequestEntityTooLarge:
            return error_response(self.chat.too_large())
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = "not_found" if exc.status == 404 else "http_error"
            return error_response(ServeError(exc.status, exc.reason, code))

    def _samples_wanted(self) -> None:
        if self.on_samples_wanted is not None:
            self.on_samples_wanted()

    # --- health and metrics ------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        """`GET /health`: answers while serve runs (no key needed; it says nothing secret)."""
        return web.Response(body=self._health, content_type="application/json")

    async def metrics(self, request: web.Request) -> web.Response:
        """`GET /metrics`: the Prometheus text of the observer, when it renders one."""
        self._samples_wanted()
        render = getattr(self.observer, "render", None)
        text = render() if callable(render) else b""
        data = text.encode() if isinstance(text, str) else bytes(text)
        ctype = getattr(self.observer, "content_type", _PROMETHEUS_TEXT)
        return web.Response(body=data, headers={"Content-Type": str(ctype)})
