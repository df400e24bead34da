"""The Engine's context method (a mixin of the facade, kept beside the context fitting)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from muxtui.engine.context.window import ModelRef
from muxtui.engine.errors import MuxtuiError
from muxtui.engine.events import ChatMessage

if TYPE_CHECKING:
    from muxtui.engine.context.fitter import ContextFitter
    from muxtui.engine.history import History
    from muxtui.engine.pool import ClientPool
    from muxtui.engine.router import Router, Target

log = logging.getLogger(__name__)


class ContextMixin:
    """Getting a conversation's token counts ready before its next turn."""

    context: ContextFitter
    history: History
    router: Router
    pool: ClientPool
    plan: Callable[[str], Awaitable[list[Target]]]  # the Engine's

    async def warm_context(self, model: str, conversation_id: int) -> None:
        """Count a saved conversation's newest messages with `model`'s tokenizer in the
        background (as far as its context reaches), so that its next turn only counts its
        new message. Nothing for a local model (its server may not be running: starting it is
        the turn's business), a server without a tokenizer, or a model that cannot be found.
        """
        from muxtui.engine.history import storable
        from muxtui.engine.turns import context_of

        try:
            target = (await self.plan(model))[0]
        except (MuxtuiError, IndexError) as exc:
            log.debug("not counting ahead for %s: %r", model, exc)
            return
        if target.local:
            return
        endpoint = self.router.pick(target)
        messages = context_of(await self.history.messages(conversation_id))
        settings = await self.history.settings(conversation_id)
        if settings is not None and settings.system_prompt:
            messages.insert(0, ChatMessage("system", storable(settings.system_prompt)))
        ref = ModelRef(target.name, target.kind, target.model_id, endpoint)
        client = self.pool.client(endpoint.base_url, target.max_connections)
        await self.context.warm(ref, messages, client)
