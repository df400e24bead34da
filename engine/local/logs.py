"""Per-server log files: private (0600 in 0700 folders), rotated when large, one header line per
start with secrets masked, and tails of what the server wrote for errors and progress."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from muxtui.engine.local.masking import MASK, mask_argv

LOG_ROTATE_BYTES = 5 * 2**20
TAIL_LINES = 20
_TAIL_BYTES = 8192


def ensure_private_dir(path: Path) -> None:
    """Create `path` (parents too) and make it 0700, whatever the umask or its earlier mode."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def server_log_path(log_dir: Path, name: str) -> Path:
    """The log file of model `name`'s server inside `log_dir` (it may not exist yet)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name) or "server"
    return log_dir / f"{safe}.log"


def begin_log(path: Path, argv: list[str], env_names: Iterable[str] = ()) -> int:
    """Rotate a large log, append this start's header, return the offset after it.

    The file and its folder are made private first: a server's output can echo prompts or
    keys. Environment values are never written, only the names of the `[local].env` entries.
    """
    ensure_private_dir(path.parent)
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, 0o600)  # also fixes a log an earlier version left readable
        if path.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
    stamp = datetime.now().isoformat(timespec="seconds")
    # Quoted like a shell line, except the masks, so they read `--api-key ****`.
    command = " ".join(t if MASK in t else shlex.quote(t) for t in mask_argv(argv))
    header = f"\n=== muxtui {stamp}: {command}"
    names = sorted(env_names)
    if names:
        header += " (env: " + ", ".join(f"{name}={MASK}" for name in names) + ")"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "ab") as handle:
        handle.write(f"{header}\n".encode())
        return handle.tell()


def read_tail(path: Path, offset: int, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines the server wrote since `offset`."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(offset, size - _TAIL_BYTES))
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    return "\n".join(line for line in text.splitlines()[-lines:])


def last_line(text: str) -> str:
    """The last line of `text` that is not blank, stripped."""
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()
    return ""
