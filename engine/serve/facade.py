"""The Engine's methods for `muxtui serve` (a mixin of the facade, kept beside serve)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from muxtui.engine.batch.forward import Reply
    from muxtui.engine.router import Target
    from muxtui.engine.serve.routes import ServeRoutes
    from muxtui.engine.serve.upstream import UpstreamStream


class ServeMixin:
    """One ready chat body sent to one resolved target, whole or streamed, with retries."""

    @functools.cached_property
    def serve_routes(self) -> ServeRoutes:
        """Serve's forwarder and routes (created on first use)."""
        from muxtui.engine.core import Engine
        from muxtui.engine.serve.routes import ServeRoutes

        assert isinstance(self, Engine)
        return ServeRoutes(self)

    async def send_chat_to(self, target: Target, payload: bytes) -> Reply:
        """Send `payload` (the body's JSON without `model`) to `target`, not streamed; the
        reply as the server sent it. Raises the final typed error after the retries."""
        from muxtui.engine.batch.forward import model_body
        from muxtui.engine.core import Engine

        assert isinstance(self, Engine)
        route = await self.serve_routes.route(target)
        return await self.serve_routes.forwarder.send(route, model_body(route.model_id, payload))

    async def open_chat_stream(self, target: Target, payload: bytes) -> UpstreamStream:
        """Send `payload` streamed to `target`; returns once its first bytes arrived (retries
        happen before that only). Close the stream when done: it holds a local server's lease."""
        from muxtui.engine.batch.forward import model_body
        from muxtui.engine.core import Engine
        from muxtui.engine.serve.upstream import open_stream

        assert isinstance(self, Engine)
        route = await self.serve_routes.route(target)
        forwarder = self.serve_routes.forwarder
        return await open_stream(forwarder, route, model_body(route.model_id, payload))

    async def record_served(
        self, model: str, messages: Sequence[tuple[str, str]], reply: str, finish: str
    ) -> None:
        """Store one served exchange as a new conversation (`[serve] history = true`)."""
        from muxtui.engine.core import Engine
        from muxtui.engine.history import conversation_title
        from muxtui.engine.redact import redact

        assert isinstance(self, Engine)
        secrets = self.secrets()
        first = next((text for role, text in messages if role == "user"), reply)
        conversation = await self.history.new_conversation(
            conversation_title(redact(first, secrets)), model
        )
        for role, text in messages:
            await self.history.add_message(conversation.id, role, redact(text, secrets))
        await self.history.add_message(
            conversation.id,
            "assistant",
            redact(reply, secrets),
            model=model,
            finish_reason=finish,
        )
