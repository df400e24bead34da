"""A conversation as a Markdown file: where it goes, what it says, and writing it safely."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from muxtui.engine.events import Conversation, StoredMessage

# Characters no file name should carry on any common system, and runs of them.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')
NAME_LENGTH = 80  # characters of the title kept in the file name
TRIES = 100  # "title (2).md" ... before giving up


def export_folder() -> Path:
    """Where exports go: ~/Downloads when it exists, else the folder muxtui was started in."""
    downloads = Path.home() / "Downloads"
    return downloads if downloads.is_dir() else Path.cwd()


def file_stem(title: str) -> str:
    """A file name (without `.md`) made from a title: unsafe characters become a dash."""
    stem = _UNSAFE.sub("-", title).strip(" .-")[:NAME_LENGTH].strip(" .-")
    return stem or "conversation"


def conversation_markdown(conversation: Conversation, messages: Sequence[StoredMessage]) -> str:
    """The conversation as Markdown: a title, where it came from, then each message."""
    exported = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(conversation.created_at))
    lines = [
        f"# {conversation.title or 'Untitled'}",
        "",
        f"*Exported from muxtui on {exported}; started {started}; {len(messages)} messages.*",
    ]
    for message in messages:
        who = "You" if message.role == "user" else message.role.capitalize()
        if message.model and message.role == "assistant":
            who += f" · {message.model}"
        lines += ["", f"## {who}", "", message.content.rstrip()]
        if message.status == "stopped":
            lines += ["", "*■ stopped: the partial reply is kept*"]
        elif message.status == "truncated":
            lines += ["", "*✂ truncated: the server ended the reply early*"]
        elif message.status == "error":
            lines += ["", f"*✗ {message.error}*"]
    return "\n".join(lines) + "\n"


def write_export(folder: Path, title: str, text: str) -> Path:
    """Write `text` to `<title>.md` in `folder`, readable by its owner only; never overwrites
    (`<title> (2).md` and so on). Raises OSError when the folder cannot take it."""
    stem = file_stem(title)
    data = text.encode("utf-8")
    for attempt in range(1, TRIES + 1):
        path = folder / (f"{stem}.md" if attempt == 1 else f"{stem} ({attempt}).md")
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
        except OSError:
            path.unlink(missing_ok=True)
            raise
        return path
    raise FileExistsError(f"{folder / stem}.md and {TRIES - 1} numbered copies already exist")
