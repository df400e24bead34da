"""Fitting a conversation into a context window: the system prompt, the new message and as many
of the newest earlier messages as fit beside the reply's room. Pure: counting is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from muxtui.engine.errors import MuxtuiError
from muxtui.engine.events import ChatMessage

# The reply's room when the turn sets no max_tokens: a quarter of the window, at most 4096.
REPLY_SHARE = 4
MAX_DEFAULT_REPLY = 4096
# Below this the reply's room is too small to be worth sending the request.
MIN_REPLY_TOKENS = 16


def default_reply_budget(window: int) -> int:
    """Tokens kept free for the reply when the turn sets no max_tokens."""
    return min(MAX_DEFAULT_REPLY, window // REPLY_SHARE)


def reply_budget(window: int | None, max_tokens: int | None) -> int:
    """Tokens kept free for the reply: the turn's max_tokens, else the default share."""
    if max_tokens is not None and max_tokens > 0:
        return max_tokens
    return default_reply_budget(window) if window is not None else 0


class ContextTooSmallError(MuxtuiError):
    """The new message (with the system prompt) alone does not fit the model's context."""

    def __init__(self, model: str, needed: int, limit: int, part: str) -> None:
        super().__init__(
            f"{part} needs about {needed:,} tokens but {model} has a {limit:,}-token context; "
            "shorten it, or choose a model with a longer context"
        )
        self.model = model
        self.needed = needed
        self.limit = limit


@dataclass(frozen=True)
class FitResult:
    """The messages to send and what was left out."""

    messages: tuple[ChatMessage, ...]  # system prompt, kept history, new message, in order
    omitted: int  # earlier messages left out, oldest first
    used_tokens: int  # counted tokens of `messages`, template included
    limit: int | None  # the model's window; None: unknown, nothing was trimmed
    budget: int | None  # prompt tokens the fit allowed itself (window - reply - margin)
    reply_budget: int  # tokens left for the reply (less than asked when the prompt is long)

    def capped_max_tokens(self, requested: int | None) -> int | None:
        """The max_tokens to send: the turn's own, cut to the room this fit left."""
        if requested is None or self.limit is None:
            return requested
        return min(requested, self.reply_budget)


def split_conversation(
    messages: Sequence[ChatMessage],
) -> tuple[tuple[ChatMessage, ...], tuple[ChatMessage, ...], ChatMessage]:
    """(leading system messages, earlier messages, the new message) of a whole conversation."""
    if not messages:
        raise ValueError("a turn needs at least one message")
    start = 0
    while start < len(messages) - 1 and messages[start].role == "system":
        start += 1
    return tuple(messages[:start]), tuple(messages[start:-1]), messages[-1]


def fit_messages(
    system: Sequence[ChatMessage],
    history: Sequence[ChatMessage],
    new_user: ChatMessage,
    window: int | None,
    reply_budget: int,
    count: Callable[[ChatMessage], int],
    *,
    per_request: int = 0,
    margin: float = 0.0,
    budget: int | None = None,
    model: str = "the model",
) -> FitResult:
    """Keep the system prompt, the new message and the newest earlier messages that fit.

    The prompt may use `window - reply_budget`, less `margin` (a share, for counting error), or
    `budget` when given (a tighter retry). Messages are never split; kept history starts at a
    user message (templates like Gemma's refuse a chat that opens with the assistant). When
    the required part leaves less than the reply budget, the reply gets what is left; when it
    leaves less than MIN_REPLY_TOKENS, `ContextTooSmallError`.
    """
    required = per_request + sum(count(m) for m in system) + count(new_user)
    if window is None:
        used = required + sum(count(m) for m in history)
        return FitResult((*system, *history, new_user), 0, used, None, None, reply_budget)
    space = int(window * (1.0 - margin))
    if budget is None:
        budget = space - reply_budget
    if required > budget:
        if space - required < MIN_REPLY_TOKENS:
            part = "the system prompt" if required - count(new_user) > space // 2 else "the message"
            raise ContextTooSmallError(model, required, window, part)
        reply_budget = min(reply_budget, space - required)
        budget = required
    left = budget - required
    kept: list[ChatMessage] = []
    for message in reversed(history):
        cost = count(message)
        if cost > left:
            break
        left -= cost
        kept.append(message)
    kept.reverse()
    while kept and kept[0].role == "assistant":
        left += count(kept.pop(0))
    used = budget - left
    messages = (*system, *kept, new_user)
    return FitResult(messages, len(history) - len(kept), used, window, budget, reply_budget)
