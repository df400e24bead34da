"""Recognising a server's "the prompt is longer than my context" rejection, and how much tighter
the one retry after it must fit.

Seen in the wild: llama-server (and Ollama's newer runner) answer 400 with
`{"error": {"type": "exceed_context_size_error", "n_prompt_tokens": N, "n_ctx": M, ...}}`;
OpenAI answers 400 with `"code": "context_length_exceeded"` and "This model's maximum context
length is M tokens. However, your messages resulted in N tokens"; OpenRouter and vLLM say
"maximum context length is M tokens ... you requested (about) N tokens"; Anthropic-style
servers "prompt is too long: N tokens > M maximum".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from muxtui.engine.backends.base import HTTPFailure
from muxtui.engine.context.fit import FitResult

_PHRASES = (
    "exceed_context_size_error",
    "context_length_exceeded",
    "exceeds the available context size",
    "maximum context length",
    "context length exceeded",
    "exceeds the context length",
    "exceeds maximum context length",
    "context window",
    "prompt is too long",
    "input is too long",
    "reduce the length of the messages",
)
_NUMBER = r"(\d[\d,]*)"
_LIMIT_PATTERNS = (
    re.compile(r"available context size \(" + _NUMBER + r" tokens?\)"),
    re.compile(r"maximum context length is " + _NUMBER),
    re.compile(r"tokens? > " + _NUMBER + r" maximum"),
)
_PROMPT_PATTERNS = (
    re.compile(r"request \(" + _NUMBER + r" tokens?\) exceeds"),
    re.compile(r"\(" + _NUMBER + r" in the messages"),
    re.compile(r"(?:resulted in|requested(?: about)?) " + _NUMBER + r" tokens"),
    re.compile(r"too long: " + _NUMBER + r" tokens?"),
)
RETRY_SHRINK = 0.75  # without the server's counts, the retry fits into 75% of what was sent
RETRY_MARGIN = 0.95  # with them, it keeps 5% more room than they say is needed


@dataclass(frozen=True)
class ContextOverflow:
    """A server refused a request as longer than its context; the counts it gave, if any."""

    prompt_tokens: int | None  # what the server counted for the refused prompt
    limit: int | None  # the context the server has
    message: str  # what the server said, one line


def _int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and value.replace(",", "").isdigit():
        return int(value.replace(",", "")) or None
    return None


def _first(patterns: tuple[re.Pattern[str], ...], text: str) -> int | None:
    for pattern in patterns:
        match = pattern.search(text)
        if match:
            return _int(match.group(1))
    return None


def context_overflow(failure: BaseException | bytes | str) -> ContextOverflow | None:
    """The context overflow `failure` reports (an HTTPFailure, an error or its text), else None."""
    if isinstance(failure, HTTPFailure):
        if failure.status < 400 or failure.status == 429:  # 429 "too many tokens" is a rate
            return None
        raw: bytes | str = failure.body
    elif isinstance(failure, BaseException):
        raw = str(failure)
    else:
        raw = failure
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    lowered = text.lower()
    if not any(phrase in lowered for phrase in _PHRASES):
        return None
    error = _error_object(text)
    limit = _int(error.get("n_ctx")) or _first(_LIMIT_PATTERNS, lowered)
    prompt = _int(error.get("n_prompt_tokens")) or _first(_PROMPT_PATTERNS, lowered)
    message = error.get("message")
    line = " ".join((message if isinstance(message, str) else text).split())[:300]
    return ContextOverflow(prompt, limit, line)


def _error_object(text: str) -> dict[str, Any]:
    """The `error` object of a JSON error body (empty when there is none)."""
    try:
        payload = json.loads(text)
    except ValueError:
        return {}
    error = payload.get("error") if isinstance(payload, dict) else None
    return error if isinstance(error, dict) else {}


def tighter_budget(
    fit: FitResult, overflow: ContextOverflow, reply_budget: int | None = None
) -> int:
    """The prompt budget for the one retry after `fit` was refused as too long.

    Budgets are in the fit's own counting units. When the server said how many tokens it
    counted, the fit's counts are scaled by how far they were off; when it said its context,
    that replaces the window the fit used (`reply_budget`: the reply's room in it, by default
    the fit's); otherwise the retry fits into 75% of what was sent.
    """
    window = overflow.limit or fit.limit
    sent = max(fit.used_tokens, 1)
    if window is not None and overflow.prompt_tokens:
        units_per_token = min(1.0, sent / overflow.prompt_tokens)
        room = window - (fit.reply_budget if reply_budget is None else reply_budget)
        budget = max(0, int(room * units_per_token * RETRY_MARGIN))
    else:
        budget = int(sent * RETRY_SHRINK)
    return min(budget, int(sent * RETRY_MARGIN))
