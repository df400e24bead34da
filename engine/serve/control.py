"""Serve's model and server routes: `/v1/models`, llama-swap's `/running` and unload, and the
muxtui clients' `/muxtui/v1/...` (entries, the latest monitor sample, load, unload, pin)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from muxtui.engine.backends.base import Endpoint
from muxtui.engine.catalog import entry_to_json
from muxtui.engine.context.window import ModelRef
from muxtui.engine.errors import MuxtuiError
from muxtui.engine.events import ModelEntry, ServerState
from muxtui.engine.serve.errors import ServeError, from_engine, parse_object

if TYPE_CHECKING:
    from muxtui.engine.core import Engine

_RUNNING = {
    ServerState.WARM: "ready",
    ServerState.BUSY: "ready",
    ServerState.STARTING: "starting",
    ServerState.STOPPING: "stopping",
    ServerState.FAILED: "failed",
}


class Control:
    """The routes that list models and start, stop or pin local servers."""

    def __init__(self, engine: Engine, samples_wanted: Callable[[], None]) -> None:
        self.engine = engine
        self._samples_wanted = samples_wanted

    async def models(self, request: web.Request) -> web.Response:
        """`GET /v1/models`: every model `muxtui models` knows, OpenAI's list shape."""
        await self._scanned()
        data = []
        for entry in self.engine.list_models():
            item = {
                "id": entry.name,
                "object": "model",
                "created": 0,
                "owned_by": entry.provider,
                "muxtui": entry_to_json(entry),
            }
            context = await self._context_length(entry)  # a client fits its turns to it
            if context:
                item["context_length"] = context
            data.append(item)
        return web.json_response({"object": "list", "data": data})

    async def _context_length(self, entry: ModelEntry) -> int:
        """The context a model runs with: a warm local server's own (its `/props`, asked once
        per server and remembered), else the configured `context`; 0 when neither says."""
        if entry.local and entry.port and entry.state in (ServerState.WARM, ServerState.BUSY):
            base_url = f"http://127.0.0.1:{entry.port}/v1"
            endpoint = Endpoint(entry.name, base_url, local=True)
            ref = ModelRef(entry.name, "openai", entry.model_id or entry.name, endpoint)
            window = await self.engine.context.window(ref, self.engine.pool.client(base_url))
            if window.tokens:
                return window.tokens
        return self.engine.context.configured_context(entry.name)

    async def running(self, request: web.Request) -> web.Response:
        """`GET /running` (llama-swap): local servers not cold, and their state."""
        running = [
            {"model": entry.name, "state": _RUNNING[entry.state]}
            for entry in self.engine.list_models()
            if entry.local and entry.state in _RUNNING
        ]
        return web.json_response({"running": running})

    async def unload_all(self, request: web.Request) -> web.Response:
        """`POST /api/models/unload` (llama-swap): stop every local server."""
        for entry in self.engine.list_models():
            if entry.local and entry.state in _RUNNING:
                await self._engine_call(self.engine.unload(entry.name))
        return web.json_response({"status": "ok"})

    async def unload_one(self, request: web.Request) -> web.Response:
        """Stop one local server (llama-swap's `/api/models/unload/{model}`, and muxtui's)."""
        name = request.match_info.get("model") or request.match_info["name"]
        await self._scanned()
        await self._engine_call(self.engine.unload(self._local_name(name)))
        return web.json_response({"status": "ok"})

    async def load(self, request: web.Request) -> web.Response:
        """`POST /muxtui/v1/models/{name}/load`: start a local server now."""
        await self._scanned()
        await self._engine_call(self.engine.preload(self._local_name(request.match_info["name"])))
        return web.json_response({"status": "ok"})

    async def pin(self, request: web.Request) -> web.Response:
        """`POST /muxtui/v1/models/{name}/pin` with {"pinned": bool}."""
        body = parse_object(await request.read())
        pinned = body.get("pinned")
        if not isinstance(pinned, bool):
            raise ServeError(400, 'the body needs {"pinned": true|false}', "missing_pinned")
        await self._scanned()
        try:
            self.engine.set_pinned(self._local_name(request.match_info["name"]), pinned)
        except MuxtuiError as exc:
            raise from_engine(exc, self.engine.secrets()) from None
        return web.json_response({"status": "ok", "pinned": pinned})

    async def muxtui_models(self, request: web.Request) -> web.Response:
        """`GET /muxtui/v1/models`: entries as `muxtui models --json` prints them."""
        await self._scanned()
        models = [entry_to_json(entry) for entry in self.engine.list_models()]
        return web.json_response({"models": models})

    async def _scanned(self) -> None:
        """Wait for the first scan of model folders (GGUF files, the bundled model): a client
        asking right after start-up must see them; later calls return at once."""
        if self.engine.servers.discovery is None:
            await self.engine.rescan()

    async def sample(self, request: web.Request) -> web.Response:
        """`GET /muxtui/v1/sample`: the latest monitor sample, or {} before the first."""
        from muxtui.engine.monitor.samples import sample_to_json

        self._samples_wanted()
        sample = self.engine.latest_sample
        return web.json_response(sample_to_json(sample) if sample is not None else {})

    def _local_name(self, name: str) -> str:
        if not any(e.local and e.name == name for e in self.engine.list_models()):
            raise ServeError(
                404, f"no local model '{name}': GET /running lists them", "model_not_found"
            )
        return name

    async def _engine_call(self, call: Awaitable[None]) -> None:
        try:
            await call
        except MuxtuiError as exc:
            raise from_engine(exc, self.engine.secrets()) from None
