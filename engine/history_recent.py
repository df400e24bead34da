"""The last conversation the history read whole, kept to answer the next read of it.

Every chat turn reads its conversation again to fit it to the context window; turning 2,000
rows into objects takes tens of milliseconds, while asking whether anything changed takes
one indexed query. Messages are only ever added (never edited), so a conversation that grew
is read from where it was left.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from muxtui.engine.events import StoredMessage

# What tells a change: how many messages, the last id, and their characters in all.
Summary = tuple[int, int, int]


class RecentConversation:
    """One conversation's messages as last read, and the summary they were read at."""

    def __init__(self, columns: str, to_message: Callable[[Any], StoredMessage]) -> None:
        self._columns = columns
        self._to_message = to_message
        self._recent: tuple[int, Summary, list[StoredMessage]] | None = None

    def forget(self) -> None:
        """Drop what is kept (a conversation was deleted: its ids may come back)."""
        self._recent = None

    def read(self, db: sqlite3.Connection, conversation_id: int) -> list[StoredMessage]:
        """Every message of the conversation, oldest first; the list must not be changed."""
        summary = _summary(db, conversation_id)
        recent = self._recent
        if recent is not None and recent[0] == conversation_id:
            _, (count, last_id, length), messages = recent
            if summary == (count, last_id, length):
                return messages
            added = self._select(db, "AND id > ?", (conversation_id, last_id))
            grown = (
                count + len(added),
                max((m.id for m in added), default=last_id),
                length + sum(len(m.content) for m in added),
            )
            if grown == summary:  # only added to since
                messages = [*messages, *added]
                self._recent = (conversation_id, summary, messages)
                return messages
        messages = self._select(db, "", (conversation_id,))
        self._recent = (conversation_id, summary, messages)
        return messages

    def _select(
        self, db: sqlite3.Connection, condition: str, args: tuple[int, ...]
    ) -> list[StoredMessage]:
        rows = db.execute(
            f"SELECT {self._columns} FROM messages WHERE conversation_id = ? {condition} "
            "ORDER BY id",
            args,
        )
        return [self._to_message(row) for row in rows]


def _summary(db: sqlite3.Connection, conversation_id: int) -> Summary:
    count, last_id, length = db.execute(
        "SELECT COUNT(*), COALESCE(MAX(id), 0), COALESCE(SUM(LENGTH(content)), 0) "
        "FROM messages WHERE conversation_id = ?",
        (conversation_id,),
    ).fetchone()
    return int(count), int(last_id), int(length)
