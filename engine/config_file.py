"""Writing the config file: comment-preserving edits, atomic private replacement (mode 0600)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from muxtui.engine.errors import ConfigError

if TYPE_CHECKING:
    from tomlkit import TOMLDocument


def update_config_file(path: Path, table: str, values: dict[str, Any]) -> None:
    """Set `values` under `[table]` in the file, keeping the person's comments and layout."""
    import tomlkit

    document = editable_config(path)
    section = document.get(table)
    if section is None:
        section = tomlkit.table()
        document[table] = section
    for key, value in values.items():
        section[key] = value
    write_private_atomically(path, tomlkit.dumps(document).encode("utf-8"))


def editable_config(path: Path) -> TOMLDocument:
    """The config file as a comment-preserving document ('' if missing); ConfigError if the
    file is not valid TOML, so nothing is saved over it."""
    import tomlkit

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(
            f"config error: {path}: not saved, the file is not valid TOML ({exc}); fix it first"
        ) from None


def write_private_atomically(path: Path, data: bytes | Iterable[bytes]) -> None:
    """Replace `path` with `data` (or its chunks, streamed) so a crash leaves either the old or
    the new file, mode 0600."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.writelines([data] if isinstance(data, bytes) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
