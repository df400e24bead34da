"""The turn pipeline's one door to context fitting: learn the window, count, fit, refit once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from muxtui.engine.config import Config
from muxtui.engine.context.fit import (
    ContextTooSmallError,
    FitResult,
    fit_messages,
    reply_budget,
    split_conversation,
)
from muxtui.engine.context.overflow import ContextOverflow, tighter_budget
from muxtui.engine.context.tokens import (
    DEFAULT_OVERHEAD,
    TOKENIZE_PER_TURN,
    CountedBy,
    MessageCounts,
    ServerTokenizer,
    TemplateOverhead,
    count_newest,
    counting_margin,
)
from muxtui.engine.context.window import ContextWindow, ModelRef, WindowLookup, server_root
from muxtui.engine.events import ChatMessage, ContextFitted

log = logging.getLogger(__name__)

__all__ = ["ContextFitter", "ModelRef", "TurnFit"]

# /tokenize requests one count after a reply may send (it runs in the background, so it is not
# held to a turn's TOKENIZE_PER_TURN; the window bounds it first for any real model).
COUNT_LATER_CALLS = 2048


@dataclass(frozen=True)
class TurnFit:
    """One fit of one turn: the messages to send, and what the fit was made of."""

    result: FitResult
    event: ContextFitted  # emit it: the chat shows `event.notice` and a gauge of `event.fill`
    ref: ModelRef
    window: ContextWindow
    system: tuple[ChatMessage, ...] = field(repr=False)
    history: tuple[ChatMessage, ...] = field(repr=False)
    new_message: ChatMessage = field(repr=False)
    max_tokens_asked: int | None = None  # the turn's own max_tokens
    counted_by: CountedBy = "estimate"

    @property
    def messages(self) -> tuple[ChatMessage, ...]:
        """What to send."""
        return self.result.messages

    def max_tokens(self, requested: int | None) -> int | None:
        """The max_tokens to send: the turn's own, cut to the room this fit left."""
        return self.result.capped_max_tokens(requested)


@dataclass
class _Tokenizer:
    """What is known of one server's tokenizer: absent, or its counts and template."""

    available: bool = True
    overhead: TemplateOverhead | None = None  # measured once per server


class ContextFitter:
    """Learns each model's context window and fits each turn's conversation into it."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self.windows = WindowLookup()
        self._counts: dict[str, MessageCounts] = {}  # per model name
        self._tokenizers: dict[str, _Tokenizer] = {}  # per server root URL
        self._later: dict[str, asyncio.Task[None]] = {}  # counting after a reply, per model

    def configured_context(self, name: str) -> int:
        """The `context` set for `name` in [models] or [local]; 0 when none."""
        entry = self._config.models.get(name) or self._config.local.get(name)
        return entry.context if entry is not None else 0

    def counts(self, name: str) -> MessageCounts:
        """The message counts kept for model `name`."""
        counts = self._counts.get(name)
        if counts is None:
            counts = self._counts[name] = MessageCounts(DEFAULT_OVERHEAD)
        return counts

    async def window(self, ref: ModelRef, client: httpx.AsyncClient) -> ContextWindow:
        """The context window of `ref` (cached; call it early to have it ready)."""
        return await self.windows.window(ref, client, self.configured_context(ref.name))

    async def fit(
        self,
        ref: ModelRef,
        messages: Sequence[ChatMessage],
        max_tokens: int | None,
        client: httpx.AsyncClient,
    ) -> TurnFit:
        """Fit `messages` (system, earlier, new) for `ref`; `ContextTooSmallError` if it can't."""
        system, history, new_message = split_conversation(messages)
        window = await self.window(ref, client)
        counted_by: CountedBy = "estimate"
        if window.tokenizer:
            if (later := self._later.get(ref.name)) is not None:
                # The last reply's counting is this turn's own work, mostly done: wait for it
                # rather than send the same texts again (not cancelling it if this turn goes).
                await asyncio.wait({later})
            reply = reply_budget(window.tokens, max_tokens)
            space = None if window.tokens is None else window.tokens - reply
            newest_first = [*system, new_message, *reversed(history)]
            if await self._tokenize(ref, client, newest_first, space):
                counted_by = "tokenizer"
        parts = (system, history, new_message)
        return self._fit(ref, window, parts, max_tokens, counted_by, None)

    def count_later(self, turn: TurnFit, reply: str, client: httpx.AsyncClient) -> None:
        """After `turn`'s reply: count in the background, with the server's tokenizer, what the
        next turn will send (the reply, and what this turn left to the estimate), so that it
        only has its own new message left to count."""
        if not turn.window.tokenizer:
            return
        newest_first = [
            *turn.system,
            ChatMessage("assistant", reply),
            turn.new_message,
            *reversed(turn.history),
        ]
        space = None
        if turn.window.tokens is not None:
            space = turn.window.tokens - reply_budget(turn.window.tokens, turn.max_tokens_asked)
        self._in_background(turn.ref, client, newest_first, space)

    async def warm(
        self, ref: ModelRef, messages: Sequence[ChatMessage], client: httpx.AsyncClient
    ) -> None:
        """Before a conversation's next turn (`messages`: system, then oldest first): count in
        the background what that turn will send, so that it only has its new message left."""
        window = await self.window(ref, client)
        if not window.tokenizer:
            return
        system = [m for m in messages if m.role == "system"]
        history = [m for m in messages if m.role != "system"]
        space = None
        if window.tokens is not None:
            space = window.tokens - reply_budget(window.tokens, None)
        self._in_background(ref, client, [*system, *reversed(history)], space)

    def _in_background(
        self,
        ref: ModelRef,
        client: httpx.AsyncClient,
        newest_first: list[ChatMessage],
        space: int | None,
    ) -> None:
        """Tokenize `newest_first` as far as `space` reaches, after the counting already
        running for the model; the model's next fit waits for it."""
        earlier = self._later.get(ref.name)

        async def count() -> None:
            if earlier is not None:
                await asyncio.wait({earlier})
            await self._tokenize(ref, client, newest_first, space, COUNT_LATER_CALLS)

        task = asyncio.create_task(count(), name=f"muxtui-count-{ref.name}")
        self._later[ref.name] = task
        task.add_done_callback(lambda done: self._forget(ref.name, done))

    def _forget(self, name: str, task: asyncio.Task[None]) -> None:
        if self._later.get(name) is task:
            del self._later[name]
        if not task.cancelled() and (error := task.exception()) is not None:
            log.debug("counting for %s after a reply: %r", name, error)

    async def idle(self) -> None:
        """Wait until the counting after replies has ended."""
        for _ in range(8):  # each may start after the one before it: a few rounds at most
            if not self._later:
                return
            await asyncio.wait(list(self._later.values()))
            await asyncio.sleep(0)  # its done callback forgets it

    async def aclose(self) -> None:
        """Stop the counting that runs in the background."""
        tasks = list(self._later.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def refit(self, turn: TurnFit, overflow: ContextOverflow) -> TurnFit:
        """A tighter fit for the one retry after the server refused `turn` as too long.

        Raises `ContextTooSmallError` when nothing is left to leave out.
        """
        window = turn.window
        if overflow.limit is not None:
            window = ContextWindow(overflow.limit, "rejection", window.tokenizer)
            self.windows.remember(turn.ref, window)
            configured = self.configured_context(turn.ref.name)
            if 0 < configured < overflow.limit:
                window = ContextWindow(configured, "config", window.tokenizer)
        asked = turn.max_tokens_asked
        budget = tighter_budget(turn.result, overflow, reply_budget(window.tokens, asked))
        if window.tokens is None:  # unknown before: what goes through now is the measure
            window = ContextWindow(budget + reply_budget(None, asked), "learned")
            self.windows.remember(turn.ref, window)
        parts = (turn.system, turn.history, turn.new_message)
        retry = self._fit(turn.ref, window, parts, asked, turn.counted_by, budget)
        if retry.result.used_tokens >= turn.result.used_tokens:
            needed = overflow.prompt_tokens or turn.result.used_tokens
            limit = window.tokens or needed
            raise ContextTooSmallError(turn.ref.name, needed, limit, "the message")
        return retry

    def _fit(
        self,
        ref: ModelRef,
        window: ContextWindow,
        parts: tuple[tuple[ChatMessage, ...], tuple[ChatMessage, ...], ChatMessage],
        max_tokens: int | None,
        counted_by: CountedBy,
        budget: int | None,
    ) -> TurnFit:
        """Fit `parts` (system, earlier, new); a `budget` marks the retry after a rejection."""
        system, history, new_message = parts
        counts = self.counts(ref.name)
        result = fit_messages(
            system,
            history,
            new_message,
            window.tokens,
            reply_budget(window.tokens, max_tokens),
            counts.count,
            per_request=counts.overhead.per_request,
            margin=counting_margin(counted_by),
            budget=budget,
            model=ref.name,
        )
        event = ContextFitted(
            model=ref.name,
            sent_messages=len(result.messages),
            omitted=result.omitted,
            sent_tokens=result.used_tokens,
            limit=window.tokens,
            reply_budget=result.reply_budget,
            counted_by=counted_by,
            window_source=window.source,
            retried=budget is not None,
        )
        return TurnFit(
            result, event, ref, window, system, history, new_message, max_tokens, counted_by
        )

    async def _tokenize(
        self,
        ref: ModelRef,
        client: httpx.AsyncClient,
        newest_first: list[ChatMessage],
        space: int | None,
        max_calls: int = TOKENIZE_PER_TURN,
    ) -> bool:
        """Count with the server's tokenizer; False where the estimate counted some of it."""
        root = server_root(ref.endpoint)
        state = self._tokenizers.setdefault(root, _Tokenizer())
        if not state.available:
            return False
        counts = self.counts(ref.name)
        tokenizer = ServerTokenizer(client, root)
        try:
            if state.overhead is None:
                state.overhead = await tokenizer.overhead() or DEFAULT_OVERHEAD
            counts.overhead = state.overhead
            return await count_newest(tokenizer, counts, newest_first, space, max_calls)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code in (404, 405, 501):
                state.available = False  # this server has no /tokenize
            log.debug("tokenizing for %s: %r", ref.name, exc)
        except (httpx.HTTPError, ValueError) as exc:
            log.debug("tokenizing for %s: %r", ref.name, exc)
        return False
