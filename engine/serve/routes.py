"""Serve's routes: one `Forwarder` (batch's lossless sender) and a cached `Route` per target.

Its own forwarder, beside the batch runs' one: they share what matters through the engine (the
router's health records and cooldowns, the local servers' leases), and serve never waits on a
batch's forwarder settings. Its upstream connections are its own too: aiohttp sessions per
endpoint (engine/serve/poster.py), closed with the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from muxtui.engine.serve.poster import ServeForwarder, SessionPool

if TYPE_CHECKING:
    from muxtui.engine.batch.forward import Route
    from muxtui.engine.core import Engine
    from muxtui.engine.router import Target


class ServeRoutes:
    """The forwarder and the routes serve sends over."""

    def __init__(self, engine: Engine) -> None:
        self.sessions = SessionPool(engine.config.network)
        self.forwarder = ServeForwarder(
            engine.pool,
            engine.router,
            engine.servers,
            engine.retry_policy,
            engine.config.serve.max_connections,
        )
        self.forwarder.sessions = self.sessions

    async def route(self, target: Target) -> Route:
        """The route of one resolved target; a local target's route knows its server's own
        model id (its server is started for that if it is cold)."""
        route = self.forwarder.kept_route(target)
        await self.forwarder.learn_model_id(route)
        return route

    async def aclose(self) -> None:
        """Close serve's upstream sessions."""
        await self.sessions.aclose()
