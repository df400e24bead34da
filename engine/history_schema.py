"""The history's schema as numbered migrations, and how they are applied."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator

# A migration is SQL or a function of the connection; each runs in one transaction that also
# records its number as the schema version, so a crash leaves the file at the previous one.
Migration = str | Callable[[sqlite3.Connection], None]
MIGRATIONS: tuple[tuple[int, Migration], ...] = (
    (
        1,
        """
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
        """,
    ),
    (
        2,
        """
        ALTER TABLE conversations ADD COLUMN system_prompt TEXT NOT NULL DEFAULT '';
        ALTER TABLE conversations ADD COLUMN temperature REAL;
        ALTER TABLE conversations ADD COLUMN max_tokens INTEGER;
        ALTER TABLE messages ADD COLUMN finish_reason TEXT NOT NULL DEFAULT '';
        """,
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


def migrate(db: sqlite3.Connection, version: int) -> None:
    """Apply, in order and each in its own transaction, the migrations above `version`."""
    for number, migration in MIGRATIONS:
        if number <= version:
            continue
        with transaction(db):
            if isinstance(migration, str):
                for statement in migration.split(";"):
                    if statement.strip():
                        db.execute(statement)
            else:
                migration(db)
            db.execute(f"PRAGMA user_version={number}")


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN, then COMMIT, or ROLLBACK on any exception (the connection is in autocommit)."""
    db.execute("BEGIN")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
