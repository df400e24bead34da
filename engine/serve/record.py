"""`[serve] history = true`: each served chat stored as one conversation, like the chat pane's.

Off by default: editors and agents send many requests that nobody wants in their history.
Text only (content parts joined); secrets masked; written after the reply has gone out.
"""

from __future__ import annotations

from typing import Any

from muxtui.engine.backends.base import text_content


def reply_text(completion: dict[str, Any]) -> tuple[str, str]:
    """The first choice's text and finish reason of a chat.completion."""
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    if not isinstance(choice, dict):
        return "", ""
    message = choice.get("message")
    text = text_content(message.get("content")) if isinstance(message, dict) else ""
    finish = choice.get("finish_reason")
    return text, finish if isinstance(finish, str) else ""


def request_messages(messages: object) -> list[tuple[str, str]]:
    """The request's messages as (role, text) pairs, in order."""
    if not isinstance(messages, list):
        return []
    pairs = []
    for message in messages:
        if isinstance(message, dict):
            role = message.get("role")
            pairs.append(
                (role if isinstance(role, str) else "user", text_content(message.get("content")))
            )
    return pairs
