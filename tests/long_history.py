"""Long histories written fast: conversations and messages inserted into the history database
in one transaction each (the tests and bench/chat_long.py use them; the app reads them through
the engine as it would any history)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

MessageText = Callable[[int], str]  # the text of message number i (0 = the first)

REPLY = """\
Here is the **answer {i}**, with a list and some code:

- first point of reply {i}
- second point, a little longer so that it wraps on a narrow screen

```python
def reply_{i}() -> int:
    return {i}
```
"""


def numbered_text(index: int) -> str:
    """User prompts and Markdown replies, alternating, each naming its number."""
    if index % 2 == 0:
        return f"question {index}: what comes next?"
    return REPLY.format(i=index)


def add_conversation(
    db_path: Path,
    title: str,
    count: int,
    text: MessageText = numbered_text,
    *,
    model: str = "fake",
    updated_at: float | None = None,
) -> int:
    """Write one conversation of `count` messages (user first, then alternating); its id."""
    return add_conversations(db_path, [(title, count, text)], model=model, updated_at=updated_at)[0]


def add_conversations(
    db_path: Path,
    conversations: Sequence[tuple[str, int, MessageText]],
    *,
    model: str = "fake",
    updated_at: float | None = None,
) -> list[int]:
    """Write conversations given as (title, message count, text of message i); their ids.

    The history must exist already (an engine has opened it): the schema is the engine's.
    """
    now = time.time() if updated_at is None else updated_at
    ids: list[int] = []
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        db.execute("BEGIN")
        for offset, (title, count, text) in enumerate(conversations):
            stamp = now - (len(conversations) - offset)  # the last listed is the newest
            cursor = db.execute(
                "INSERT INTO conversations (title, model, created_at, updated_at) "
                "VALUES (?, ?, ?, ?)",
                (title, model, stamp - count, stamp),
            )
            conversation_id = int(cursor.lastrowid or 0)
            db.executemany(
                "INSERT INTO messages (conversation_id, role, content, model, status, error, "
                "created_at) VALUES (?, ?, ?, ?, 'complete', '', ?)",
                (
                    (
                        conversation_id,
                        "user" if index % 2 == 0 else "assistant",
                        text(index),
                        "" if index % 2 == 0 else model,
                        stamp - count + index,
                    )
                    for index in range(count)
                ),
            )
            ids.append(conversation_id)
        db.execute("COMMIT")
    finally:
        db.close()
    return ids
