"""The cache seen from a chat turn: its key, a stored reply made from it, and its replay."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from muxtui.engine.cache.key import cache_key, wants_cache
from muxtui.engine.cache.sse import pieces
from muxtui.engine.events import ChatDelta, ChatFinished, ChatMessage, ChatParams, ChatStats

# Replies worth keeping: whole ones. A turn reads no tool calls, so "tool_calls" is not whole.
STORED_FINISHES = frozenset({"stop", "length"})
REPLAY_PIECE_CHARS = 64


def turn_body(messages: Sequence[ChatMessage], params: ChatParams) -> dict[str, Any]:
    """The request body a turn sends, less model and stream (what its key is made of)."""
    body: dict[str, Any] = {"messages": [{"role": m.role, "content": m.content} for m in messages]}
    body.update(params.body_fields())
    return body


def turn_wants_cache(params: ChatParams) -> bool:
    """Whether a turn's params ask for the cache (temperature 0 or a seed)."""
    return wants_cache(params.body_fields())


def turn_key(messages: Sequence[ChatMessage], params: ChatParams, identity: str) -> str:
    """The cache key of a turn sent to the model `identity`."""
    return cache_key(turn_body(messages, params), identity)


def turn_completion(finished: ChatFinished, model_id: str) -> dict[str, Any] | None:
    """The chat.completion to store for a finished turn, or None if it is not whole."""
    if finished.finish_reason not in STORED_FINISHES:
        return None
    completion: dict[str, Any] = {
        "id": f"chatcmpl-muxtui-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_id,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": finished.text},
                "finish_reason": finished.finish_reason,
            }
        ],
    }
    stats = finished.stats
    if stats.tokens_reported:
        completion["usage"] = {
            "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.completion_tokens,
            "total_tokens": stats.prompt_tokens + stats.completion_tokens,
        }
    return completion


def replay_turn(
    completion: dict[str, Any], model: str, provider: str, started_at: float
) -> Iterator[ChatDelta | ChatFinished]:
    """A stored reply as a turn's events: its text in a few deltas, then `ChatFinished`."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    content = message.get("content")
    text = content if isinstance(content, str) else ""
    for piece in pieces(text, REPLAY_PIECE_CHARS):
        yield ChatDelta(piece)
    usage = completion.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    prompt, generated = usage.get("prompt_tokens"), usage.get("completion_tokens")
    stats = ChatStats(
        model=model,
        provider=provider,
        prompt_tokens=prompt if isinstance(prompt, int) else 0,
        completion_tokens=generated if isinstance(generated, int) else 0,
        total_s=time.monotonic() - started_at,
        tokens_reported=isinstance(generated, int),
        cached=True,
    )
    yield ChatFinished(text, stats, choice.get("finish_reason") or "stop")
