"""Streamed replies and whole ones: `assemble` chunks into a chat.completion, `replay` one as SSE.

A cached reply is stored whole (as a non-streamed request would get it); a streamed request for
it is answered with chunks shaped like a server's: the role, reasoning and content in pieces of
about a token (a word), each tool call's name then its arguments in pieces, a chunk with the
finish reason, a usage chunk, then `data: [DONE]`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

PIECE_CHARS = 4  # a replayed piece: about a token (a word with its space, or 4 characters)
_TEXT_ORDER = ("reasoning_content", "reasoning", "content")  # what a reply streams first
DONE = b"data: [DONE]\n\n"


def _merge_tool_calls(into: dict[int, dict[str, Any]], deltas: list[Any]) -> None:
    for position, delta in enumerate(deltas):
        if not isinstance(delta, dict):
            continue
        index = delta.get("index", position)
        call = into.setdefault(index, {"id": "", "type": "function", "function": {}})
        for name, value in delta.items():
            if name == "index" or value is None:
                continue
            if name == "function" and isinstance(value, dict):
                function = call["function"]
                for field_name, part in value.items():
                    if isinstance(part, str):
                        function[field_name] = function.get(field_name, "") + part
                    elif part is not None:
                        function[field_name] = part
            elif name == "id" and isinstance(value, str):
                call["id"] = call["id"] or value
            else:
                call[name] = value


def assemble(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """One chat.completion from a stream's chat.completion.chunk objects, in order.

    String fields of each choice's delta (content, reasoning_content, refusal...) are
    concatenated, tool calls merged by index, and the last finish reason, usage, id, created,
    model and system_fingerprint kept.
    """
    head: dict[str, Any] = {}
    usage: Any = None
    messages: dict[int, dict[str, Any]] = {}
    tool_calls: dict[int, dict[int, dict[str, Any]]] = {}
    finish: dict[int, Any] = {}
    for chunk in chunks:
        for name in ("id", "created", "model", "system_fingerprint"):
            if chunk.get(name) is not None:
                head.setdefault(name, chunk[name])
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            index = choice.get("index", 0)
            message = messages.setdefault(index, {"role": "assistant"})
            delta = choice.get("delta") or {}
            for name, value in delta.items():
                if name == "tool_calls" and isinstance(value, list):
                    _merge_tool_calls(tool_calls.setdefault(index, {}), value)
                elif isinstance(value, str) and name != "role":
                    message[name] = message.get(name, "") + value
                elif value is not None:
                    message[name] = value
            if choice.get("finish_reason") is not None:
                finish[index] = choice["finish_reason"]
    choices = []
    for index in sorted(messages.keys() | finish.keys()):
        message = messages.get(index, {"role": "assistant"})
        calls = tool_calls.get(index)
        if calls:
            message["tool_calls"] = [calls[i] for i in sorted(calls)]
        message.setdefault("content", None if calls else "")
        choices.append({"index": index, "message": message, "finish_reason": finish.get(index)})
    completion: dict[str, Any] = {
        "id": head.get("id", ""),
        "object": "chat.completion",
        "created": head.get("created", int(time.time())),
        "model": head.get("model", ""),
        "choices": choices,
    }
    if "system_fingerprint" in head:
        completion["system_fingerprint"] = head["system_fingerprint"]
    if usage is not None:
        completion["usage"] = usage
    return completion


def pieces(text: str, size: int = PIECE_CHARS) -> list[str]:
    """`text` in pieces of about `size` characters, cut after a space where one is near."""
    out: list[str] = []
    start, length = 0, len(text)
    while start < length:
        end = start + size
        if end >= length:
            out.append(text[start:])
            break
        space = text.find(" ", start + max(1, size // 2), end + size)
        cut = space + 1 if space != -1 else end
        out.append(text[start:cut])
        start = cut
    return out


def replay_chunks(
    completion: dict[str, Any], *, include_usage: bool = True
) -> Iterator[dict[str, Any]]:
    """The chat.completion.chunk objects a server would have streamed for `completion`."""
    base = {
        "id": completion.get("id", ""),
        "object": "chat.completion.chunk",
        "created": completion.get("created", int(time.time())),
        "model": completion.get("model", ""),
    }
    if "system_fingerprint" in completion:
        base["system_fingerprint"] = completion["system_fingerprint"]

    def chunk(index: int, delta: dict[str, Any], finish: Any = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}

    for position, choice in enumerate(completion.get("choices") or ()):
        index = choice.get("index", position)
        message = choice.get("message") or {}
        opening: dict[str, Any] = {"role": message.get("role", "assistant")}
        if isinstance(message.get("content"), str):
            opening["content"] = ""
        yield chunk(index, opening)
        text_fields = [n for n in _TEXT_ORDER if isinstance(message.get(n), str)]
        text_fields += [
            n
            for n, v in message.items()
            if isinstance(v, str) and n not in _TEXT_ORDER and n != "role"
        ]
        for name in text_fields:
            for piece in pieces(message[name]):
                yield chunk(index, {name: piece})
        for call_index, call in enumerate(message.get("tool_calls") or ()):
            function = dict(call.get("function") or {})
            arguments = function.pop("arguments", "") or ""
            head = {k: v for k, v in call.items() if k != "function"}
            head["function"] = {**function, "arguments": ""}
            yield chunk(index, {"tool_calls": [{"index": call_index, **head}]})
            for piece in pieces(arguments):
                part = {"index": call_index, "function": {"arguments": piece}}
                yield chunk(index, {"tool_calls": [part]})
        yield chunk(index, {}, choice.get("finish_reason") or "stop")
    if include_usage and completion.get("usage") is not None:
        yield {**base, "choices": [], "usage": completion["usage"]}


def replay(completion: dict[str, Any], *, include_usage: bool = True) -> Iterator[bytes]:
    """`completion` as SSE: `data: <chunk>\\n\\n` for each chunk, then `data: [DONE]\\n\\n`.

    The usage chunk comes last (before [DONE]) unless `include_usage` is False (a client that
    did not ask for `stream_options.include_usage`).
    """
    for chunk in replay_chunks(completion, include_usage=include_usage):
        text = json.dumps(chunk, separators=(",", ":"), ensure_ascii=False)
        yield b"data: " + text.encode() + b"\n\n"
    yield DONE
