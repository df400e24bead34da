"""Conversations and their messages in SQLite (WAL), touched only from one worker thread.

The file and its `-wal`/`-shm` companions are 0600 in a 0700 folder, whatever the umask and
whatever modes an older muxtui left. The schema grows by `history_schema.MIGRATIONS`, applied
in order at open.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from muxtui.engine.errors import MuxtuiError
from muxtui.engine.events import (
    MESSAGE_STATUSES,
    ChatSettings,
    ChatStats,
    Conversation,
    MessageStatus,
    StoredMessage,
)
from muxtui.engine.history_recent import RecentConversation
from muxtui.engine.history_schema import SCHEMA_VERSION, migrate, transaction

_T = TypeVar("_T")

# The record types live in `events`; the chat pane still names them from here until it moves
# to the engine facade.
__all__ = ["History", "MessageStatus", "StoredMessage", "conversation_title"]

_CONVERSATION_COLUMNS = (
    "c.id, c.title, c.model, c.created_at, c.updated_at, "
    "(SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id)"
)
_MESSAGE_COLUMNS = (
    "id, conversation_id, role, content, model, status, error, created_at, finish_reason, "
    "provider, prompt_tokens, completion_tokens, ttft_s, tokens_per_s, total_s"
)
_RECENT_FIRST = "ORDER BY c.updated_at DESC, c.id DESC LIMIT ?"
_ELSEWHERE = "or set XDG_DATA_HOME to a writable folder"

TITLE_LENGTH = 48  # characters of a conversation title made from its first prompt


def conversation_title(prompt: str) -> str:
    """A conversation's title from its first prompt: the first line, shortened."""
    first_line = prompt.strip().splitlines()[0] if prompt.strip() else "New chat"
    if len(first_line) <= TITLE_LENGTH:
        return first_line
    return first_line[: TITLE_LENGTH - 1].rstrip() + "…"


def storable(text: str) -> str:
    """`text` as valid Unicode: lone surrogates (undecodable bytes smuggled in) become U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


class History:
    """The conversation store; every method runs its SQL on one dedicated thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        # Every turn reads its conversation again; a long one takes tens of milliseconds to
        # turn into objects. Only the history's thread touches it.
        self._recent = RecentConversation(_MESSAGE_COLUMNS, _message)

    # --- life cycle --------------------------------------------------------------------------

    async def open(self) -> None:
        """Create or open the database, private and in WAL mode, migrated to the latest schema."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="muxtui-history")
        if self._db is None:
            self._db = await self._run(self._connect)

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
        self._prepare_files()
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._unusable(exc) from None
        try:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:  # refused before anything (even WAL mode) touches it
                raise MuxtuiError(
                    f"history: {self.path} was written by a newer muxtui (schema {version}, "
                    f"this one knows {SCHEMA_VERSION}); upgrade muxtui, {_ELSEWHERE}"
                )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            migrate(db, version)
        except BaseException as exc:
            db.close()
            if isinstance(exc, sqlite3.Error):
                raise self._unusable(exc) from None
            raise
        return db

    def _prepare_files(self) -> None:
        """A private folder and a private file before SQLite makes its companions from it."""
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except (FileExistsError, NotADirectoryError):
            blocker = next(p for p in (folder, *folder.parents) if p.exists() and not p.is_dir())
            raise MuxtuiError(
                f"history: cannot create the data folder {folder}: {blocker} is a file; "
                f"move that file aside, {_ELSEWHERE}"
            ) from None
        except OSError as exc:
            raise MuxtuiError(
                f"history: cannot create the data folder {folder} "
                f"({exc.strerror or type(exc).__name__}); make its parent writable, {_ELSEWHERE}"
            ) from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise self._not_writable(folder)
        with contextlib.suppress(OSError):  # a folder of someone else's: SQLite will say so
            os.chmod(folder, 0o700)
        try:
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        except IsADirectoryError:
            raise MuxtuiError(
                f"history: {self.path} is a folder, not the history file; move it aside, "
                f"{_ELSEWHERE}"
            ) from None
        except OSError:
            raise self._not_writable(self.path) from None
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(f"{self.path}{suffix}", 0o600)

    def _not_writable(self, where: Path) -> MuxtuiError:
        fix = "chmod u+rwx" if where == self.path.parent else "chmod u+rw"
        return MuxtuiError(
            f"history: {where} is not writable, so conversations cannot be saved; "
            f"fix its permissions ({fix} {where}), {_ELSEWHERE}"
        )

    def _unusable(self, exc: sqlite3.Error) -> MuxtuiError:
        text = str(exc)
        if "readonly" in text or "unable to open" in text:
            return self._not_writable(self.path.parent)
        return MuxtuiError(
            f"history: {self.path} cannot be used ({text}); move it aside to start afresh"
        )

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

    async def new_conversation(
        self, title: str = "", model: str = "", settings: ChatSettings | None = None
    ) -> Conversation:
        """Start a conversation, with its own settings if given."""
        return await self._run(
            self._new_conversation, storable(title), model, settings or ChatSettings()
        )

    def _new_conversation(self, title: str, model: str, settings: ChatSettings) -> Conversation:
        now = time.time()
        cursor = self._conn().execute(
            "INSERT INTO conversations (title, model, created_at, updated_at, system_prompt, "
            "temperature, max_tokens) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (title, model, now, now, *_settings_row(settings)),
        )
        return Conversation(int(cursor.lastrowid or 0), title, model, now, now, 0)

    async def list_conversations(self, limit: int | None = None) -> list[Conversation]:
        """Conversations, most recently active first; at most `limit` of them if given."""
        return await self._run(self._list_conversations, "", limit)

    async def search_conversations(self, text: str, limit: int | None = None) -> list[Conversation]:
        """Conversations whose title or any message contains `text` (ASCII case ignored)."""
        return await self._run(self._list_conversations, storable(text), limit)

    def _list_conversations(self, text: str, limit: int | None) -> list[Conversation]:
        count = -1 if limit is None else limit
        if not text:
            sql = f"SELECT {_CONVERSATION_COLUMNS} FROM conversations c {_RECENT_FIRST}"
            return [Conversation(*row) for row in self._conn().execute(sql, (count,))]
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        sql = (
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations c WHERE c.title LIKE ? "
            "ESCAPE '\\' OR EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id "
            f"AND m.content LIKE ? ESCAPE '\\') {_RECENT_FIRST}"
        )
        rows = self._conn().execute(sql, (pattern, pattern, count))
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
        await self._run(self._update, conversation_id, ("title",), (storable(title),))

    async def set_model(self, conversation_id: int, model: str) -> None:
        """Remember the model a conversation last used."""
        await self._run(self._update, conversation_id, ("model",), (model,))

    async def settings(self, conversation_id: int) -> ChatSettings | None:
        """A conversation's own settings, or None if it does not exist."""
        return await self._run(self._settings, conversation_id)

    def _settings(self, conversation_id: int) -> ChatSettings | None:
        row = (
            self._conn()
            .execute(
                "SELECT system_prompt, temperature, max_tokens FROM conversations WHERE id = ?",
                (conversation_id,),
            )
            .fetchone()
        )
        if row is None:
            return None
        prompt, temperature, max_tokens = row
        return ChatSettings(str(prompt), temperature, max_tokens)

    async def save_settings(self, conversation_id: int, settings: ChatSettings) -> None:
        """Keep `settings` with a conversation; `LookupError` if it is gone."""
        columns = ("system_prompt", "temperature", "max_tokens")
        await self._run(self._update, conversation_id, columns, _settings_row(settings))

    def _update(
        self, conversation_id: int, columns: tuple[str, ...], values: tuple[object, ...]
    ) -> None:
        assignments = ", ".join(f"{column} = ?" for column in columns)
        cursor = self._conn().execute(
            f"UPDATE conversations SET {assignments} WHERE id = ?", (*values, conversation_id)
        )
        if cursor.rowcount == 0:
            raise LookupError(f"no conversation with id {conversation_id}")

    async def delete(self, conversation_id: int) -> None:
        """Delete a conversation and its messages."""
        await self._run(self._delete, conversation_id)

    def _delete(self, conversation_id: int) -> None:
        self._recent.forget()
        self._conn().execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # --- messages ----------------------------------------------------------------------------

    async def messages(
        self, conversation_id: int, newest: int | None = None
    ) -> list[StoredMessage]:
        """A conversation's messages in the order they were added (only its `newest` last ones,
        if given)."""
        return await self._run(self._messages, conversation_id, newest)

    def _messages(self, conversation_id: int, newest: int | None) -> list[StoredMessage]:
        if newest is None:
            return list(self._recent.read(self._conn(), conversation_id))
        rows = self._conn().execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? "
            "ORDER BY id DESC LIMIT ?",
            (conversation_id, max(0, newest)),
        )
        return [_message(row) for row in reversed(rows.fetchall())]

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
        finish_reason: str = "",
    ) -> int:
        """Append a message and return its id; `LookupError` if the conversation is gone."""
        if status not in MESSAGE_STATUSES:
            raise ValueError(f"message status must be one of {MESSAGE_STATUSES}, not {status!r}")
        row = (role, storable(content), model, status, storable(error), finish_reason)
        return await self._run(self._add_message, conversation_id, row, stats)

    def _add_message(
        self, conversation_id: int, row: tuple[object, ...], stats: ChatStats | None
    ) -> int:
        now = time.time()
        db = self._conn()
        role, content, model, status, error, finish_reason = row
        values = (conversation_id, role, content, model, status, error, now, finish_reason)
        try:
            with transaction(db):
                cursor = db.execute(
                    f"INSERT INTO messages ({_MESSAGE_COLUMNS.removeprefix('id, ')}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*values, *_stats(stats)),
                )
                db.execute(
                    "UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id)
                )
        except sqlite3.IntegrityError:
            raise LookupError(f"no conversation with id {conversation_id}") from None
        return int(cursor.lastrowid or 0)


def _settings_row(settings: ChatSettings) -> tuple[object, ...]:
    return (storable(settings.system_prompt), settings.temperature, settings.max_tokens)


def _stats(stats: ChatStats | None) -> tuple[object, ...]:
    if stats is None:
        return (None, None, None, None, None, None)
    return (
        stats.provider,
        stats.prompt_tokens,
        stats.completion_tokens if stats.tokens_reported else None,  # NULL: a chunk count
        stats.ttft_s,
        stats.tokens_per_s,
        stats.total_s,
    )


def _message(row: Any) -> StoredMessage:
    (mid, cid, role, content, model, status, error, created, finish, provider, *numbers) = row
    stats = None
    if provider is not None:
        prompt, completion, ttft, rate, total = numbers
        stats = ChatStats(
            model=str(model),
            provider=str(provider),
            prompt_tokens=int(prompt or 0),
            completion_tokens=int(completion or 0),
            tokens_reported=completion is not None,
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
        finish_reason=str(finish),
    )
