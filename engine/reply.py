"""The pieces of one streamed reply: its meter (text, timings, stats), a whole reply shaped
as a stream, and the lease on a local server with its start-up progress."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from muxtui.engine.backends.base import Backend, ChatRequest, StreamEnd
from muxtui.engine.events import ChatDelta, ChatStats, ChatStatus

if TYPE_CHECKING:
    from muxtui.engine.local.manager import LocalEndpoint, ServerManager


async def whole_reply(
    backend: Backend, request: ChatRequest
) -> AsyncGenerator[ChatDelta | StreamEnd, None]:
    """A non-streaming request, shaped like a stream of one delta."""
    completion = await backend.complete(request)
    if completion.text:
        yield ChatDelta(completion.text)
    yield completion.end


async def hold_local(
    servers: ServerManager,
    name: str,
    held: contextlib.AsyncExitStack,
    lease: list[LocalEndpoint],
) -> AsyncGenerator[ChatStatus, None]:
    """Start (or join) a local server, forwarding its progress, and hold it in `held`."""
    statuses: list[str] = []
    wake = asyncio.Event()

    def on_status(message: str) -> None:
        statuses.append(message)
        wake.set()

    manager = servers.acquire(name, on_status=on_status)
    entering = asyncio.ensure_future(manager.__aenter__())
    try:
        while not entering.done():
            waiter = asyncio.ensure_future(wake.wait())
            try:
                await asyncio.wait({entering, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            wake.clear()
            while statuses:
                yield ChatStatus(statuses.pop(0))
    except BaseException:
        if not entering.done():
            entering.cancel()
            await asyncio.gather(entering, return_exceptions=True)
        elif not entering.cancelled() and entering.exception() is None:
            await manager.__aexit__(None, None, None)
        raise
    lease.append(entering.result())
    held.push_async_exit(manager)
    while statuses:
        yield ChatStatus(statuses.pop(0))


@dataclass
class ReplyMeter:
    """What one reply has produced so far, shared by its attempts."""

    started_at: float
    parts: list[str] = field(default_factory=list)
    first_at: float = 0.0
    ended_at: float = 0.0
    end: StreamEnd | None = None
    provider: str = ""

    def text(self) -> str:
        """The reply text so far."""
        return "".join(self.parts)

    def finish_reason(self) -> str:
        """Why the reply ended, as the server said ("stop" when it did not say)."""
        return self.end.finish_reason if self.end is not None else "stop"

    def stats(self, model: str) -> ChatStats:
        """Tokens and timings: the server's figures where it sent them, measured otherwise."""
        end = self.end
        ended = self.ended_at or time.monotonic()
        completion = len(self.parts)
        prompt = 0
        rate = None
        reported = end is not None and end.completion_tokens is not None
        if end is not None:
            completion = end.completion_tokens if end.completion_tokens is not None else completion
            prompt = end.prompt_tokens or 0
            rate = end.tokens_per_s
        if rate is None:
            generating = ended - self.first_at if self.first_at else 0.0
            if completion > 1 and generating > 0.001:
                rate = completion / generating
            elif completion and ended > self.started_at:
                rate = completion / (ended - self.started_at)
            else:
                rate = 0.0
        return ChatStats(
            model=model,
            provider=self.provider,
            prompt_tokens=prompt,
            completion_tokens=completion,
            ttft_s=(self.first_at - self.started_at) if self.first_at else 0.0,
            tokens_per_s=rate,
            total_s=ended - self.started_at,
            tokens_reported=reported,
        )
