"""Conversations and their messages in SQLite (WAL), touched only from one worker thread."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from muxtui.engine.errors import MuxtuiError
from muxtui.engine.events import ChatMessage, ChatStats

MessageStatus = Literal["complete", "stopped", "error"]
MESSAGE_STATUSES: tuple[MessageStatus, ...] = ("complete", "stopped", "error")

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    model TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'complete',
    error TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    provider TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    ttft_s REAL,
    tokens_per_s REAL,
    total_s REAL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation_id, id);
CREATE INDEX IF NOT EXISTS conversations_by_update ON conversations (updated_at);
"""
_SCHEMA_VERSION = 1

_CONVERSATION_COLUMNS = (
    "c.id, c.title, c.model, c.created_at, c.updated_at, "
    "(SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id)"
)
_MESSAGE_COLUMNS = (
    "id, conversation_id, role, content, model, status, error, created_at, "
    "provider, prompt_tokens, completion_tokens, ttft_s, tokens_per_s, total_s"
)


TITLE_LENGTH = 48  # characters of a conversation title made from its first prompt


def conversation_title(prompt: str) -> str:
    """A conversation's title from its first prompt: the first line, shortened."""
    first_line = prompt.strip().splitlines()[0] if prompt.strip() else "New chat"
    if len(first_line) <= TITLE_LENGTH:
        return first_line
    return first_line[: TITLE_LENGTH - 1].rstrip() + "…"


@dataclass(frozen=True)
class Conversation:
    """One conversation's summary."""

    id: int
    title: str
    model: str
    created_at: float
    updated_at: float
    message_count: int = 0


@dataclass(frozen=True)
class StoredMessage:
    """One stored message; a reply cut short keeps its partial text and says why."""

    id: int
    conversation_id: int
    role: str
    content: str
    model: str = ""
    status: MessageStatus = "complete"
    error: str = ""
    created_at: float = 0.0
    stats: ChatStats | None = None

    def as_chat(self) -> ChatMessage:
        """The message as it is sent back to a model."""
        return ChatMessage(self.role, self.content)


class History:
    """The conversation store; every method runs its SQL on one dedicated thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    # --- life cycle --------------------------------------------------------------------------

    async def open(self) -> None:
        """Create or open the database file (mode 0600) in WAL mode."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="muxtui-history")
        if self._db is None:
            self._db = await self._run(self._connect)

    @property
    def is_open(self) -> bool:
        """Whether `open()` has finished and `close()` has not been called."""
        return self._db is not None

    async def close(self) -> None:
        """Close the database and stop the worker thread."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        db, self._db = self._db, None
        if db is not None:
            await asyncio.get_running_loop().run_in_executor(executor, db.close)
        executor.shutdown(wait=False)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fresh = not self.path.exists()
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise MuxtuiError(
                f"history: {self.path} cannot be used ({exc}); move it aside to start afresh"
            ) from None
        if fresh:
            with contextlib.suppress(OSError):
                os.chmod(self.path, 0o600)
        return db

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        if self._executor is None:
            raise RuntimeError("history is not open; await History.open() first")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("history is not open; await History.open() first")
        return self._db

    # --- conversations -----------------------------------------------------------------------

    async def new_conversation(self, title: str = "", model: str = "") -> Conversation:
        """Start a conversation."""
        return await self._run(self._new_conversation, title, model)

    def _new_conversation(self, title: str, model: str) -> Conversation:
        now = time.time()
        cursor = self._conn().execute(
            "INSERT INTO conversations (title, model, created_at, updated_at) VALUES (?, ?, ?, ?)",
            (title, model, now, now),
        )
        return Conversation(int(cursor.lastrowid or 0), title, model, now, now, 0)

    async def list_conversations(self) -> list[Conversation]:
        """Every conversation, most recently active first."""
        return await self._run(self._list_conversations)

    def _list_conversations(self) -> list[Conversation]:
        rows = self._conn().execute(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations c "
            "ORDER BY c.updated_at DESC, c.id DESC"
        )
        return [Conversation(*row) for row in rows]

    async def get_conversation(self, conversation_id: int) -> Conversation | None:
        """One conversation, or None if it does not exist."""
        return await self._run(self._get_conversation, conversation_id)

    def _get_conversation(self, conversation_id: int) -> Conversation | None:
        row = (
            self._conn()
            .execute(
                f"SELECT {_CONVERSATION_COLUMNS} FROM conversations c WHERE c.id = ?",
                (conversation_id,),
            )
            .fetchone()
        )
        return Conversation(*row) if row else None

    async def rename(self, conversation_id: int, title: str) -> None:
        """Change a conversation's title."""
        await self._run(self._update_conversation, conversation_id, "title", title)

    async def set_model(self, conversation_id: int, model: str) -> None:
        """Remember the model a conversation last used."""
        await self._run(self._update_conversation, conversation_id, "model", model)

    def _update_conversation(self, conversation_id: int, column: str, value: str) -> None:
        assert column in ("title", "model")
        self._conn().execute(
            f"UPDATE conversations SET {column} = ? WHERE id = ?", (value, conversation_id)
        )

    async def delete(self, conversation_id: int) -> None:
        """Delete a conversation and its messages."""
        await self._run(self._delete, conversation_id)

    def _delete(self, conversation_id: int) -> None:
        self._conn().execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # --- messages ----------------------------------------------------------------------------

    async def messages(self, conversation_id: int) -> list[StoredMessage]:
        """A conversation's messages in the order they were added."""
        return await self._run(self._messages, conversation_id)

    def _messages(self, conversation_id: int) -> list[StoredMessage]:
        rows = self._conn().execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? ORDER BY id",
            (conversation_id,),
        )
        return [_message(row) for row in rows]

    async def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        *,
        model: str = "",
        status: MessageStatus = "complete",
        stats: ChatStats | None = None,
        error: str = "",
    ) -> int:
        """Append a message and return its id; `LookupError` if the conversation is gone."""
        _check_status(status)
        return await self._run(
            self._add_message, conversation_id, role, content, model, status, stats, error
        )

    def _add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        model: str,
        status: str,
        stats: ChatStats | None,
        error: str,
    ) -> int:
        now = time.time()
        db = self._conn()
        try:
            with _transaction(db):
                cursor = db.execute(
                    f"INSERT INTO messages ({_MESSAGE_COLUMNS.removeprefix('id, ')}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (conversation_id, role, content, model, status, error, now, *_stats(stats)),
                )
                db.execute(
                    "UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id)
                )
        except sqlite3.IntegrityError:
            raise LookupError(f"no conversation with id {conversation_id}") from None
        return int(cursor.lastrowid or 0)

    async def update_message(
        self,
        message_id: int,
        *,
        content: str | None = None,
        status: MessageStatus | None = None,
        stats: ChatStats | None = None,
        error: str | None = None,
        model: str | None = None,
    ) -> None:
        """Change the given fields of a stored message (e.g. when a streamed reply ends)."""
        if status is not None:
            _check_status(status)
        changes: dict[str, object] = {}
        for column, value in (
            ("content", content),
            ("status", status),
            ("error", error),
            ("model", model),
        ):
            if value is not None:
                changes[column] = value
        if stats is not None:
            names = (
                "provider",
                "prompt_tokens",
                "completion_tokens",
                "ttft_s",
                "tokens_per_s",
                "total_s",
            )
            changes.update(zip(names, _stats(stats), strict=True))
        if changes:
            await self._run(self._update_message, message_id, changes)

    def _update_message(self, message_id: int, changes: dict[str, object]) -> None:
        assignments = ", ".join(f"{column} = ?" for column in changes)
        self._conn().execute(
            f"UPDATE messages SET {assignments} WHERE id = ?", (*changes.values(), message_id)
        )


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    db.execute("BEGIN")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _check_status(status: str) -> None:
    if status not in MESSAGE_STATUSES:
        raise ValueError(f"message status must be one of {MESSAGE_STATUSES}, not {status!r}")


def _stats(stats: ChatStats | None) -> tuple[object, ...]:
    if stats is None:
        return (None, None, None, None, None, None)
    return (
        stats.provider,
        stats.prompt_tokens,
        stats.completion_tokens,
        stats.ttft_s,
        stats.tokens_per_s,
        stats.total_s,
    )


def _message(row: Any) -> StoredMessage:
    (mid, cid, role, content, model, status, error, created, provider, *numbers) = row
    stats = None
    if provider is not None:
        prompt, completion, ttft, rate, total = numbers
        stats = ChatStats(
            model=str(model),
            provider=str(provider),
            prompt_tokens=int(prompt or 0),
            completion_tokens=int(completion or 0),
            ttft_s=float(ttft or 0.0),
            tokens_per_s=float(rate or 0.0),
            total_s=float(total or 0.0),
        )
    return StoredMessage(
        id=int(mid),
        conversation_id=int(cid),
        role=str(role),
        content=str(content),
        model=str(model),
        status=status if status in MESSAGE_STATUSES else "complete",
        error=str(error),
        created_at=float(created),
        stats=stats,
    )
