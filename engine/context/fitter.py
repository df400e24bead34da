"""The turn pipeline's one door to context fitting: learn the window, count, fit, refit once."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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
    CountedBy,
    MessageCounts,
    ServerTokenizer,
    TemplateOverhead,
    count_newest,
    counting_margin,
)
from muxtui.engine.context.window import ContextWindow, ModelRef, WindowLookup, server_root
from muxtui.engine.events import ContextFitted

if TYPE_CHECKING:
    from muxtui.engine.events import ChatMessage

log = logging.getLogger(__name__)

__all__ = ["ContextFitter", "ModelRef", "TurnFit"]


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
            reply = reply_budget(window.tokens, max_tokens)
            space = None if window.tokens is None else window.tokens - reply
            newest_first = [*system, new_message, *reversed(history)]
            if await self._tokenize(ref, client, newest_first, space):
                counted_by = "tokenizer"
        parts = (system, history, new_message)
        return self._fit(ref, window, parts, max_tokens, counted_by, None)

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
            return await count_newest(tokenizer, counts, newest_first, space)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code in (404, 405, 501):
                state.available = False  # this server has no /tokenize
            log.debug("tokenizing for %s: %r", ref.name, exc)
        except (httpx.HTTPError, ValueError) as exc:
            log.debug("tokenizing for %s: %r", ref.name, exc)
        return False
