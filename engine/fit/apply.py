"""Applying a recommendation: a `[local]` entry's llama-server flags replaced in its `cmd`,
written into the config file without touching anything else in it (comments, layout, other
tables), atomically, mode 0600.

A model muxtui found in a folder has no entry yet: it gets a new `[local.NAME]` table with its
`path` and muxtui's default llama-server command carrying the flags, appended at the end of
the file. Nothing is written when the file is not valid TOML, the entry is not a table, its
command does not run llama-server, or the result would not load.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from muxtui.engine.config import Config, parse_config
from muxtui.engine.config_file import editable_config, write_private_atomically
from muxtui.engine.errors import ConfigError
from muxtui.engine.fit.flags import RECOMMENDED_OPTIONS, RECOMMENDED_SWITCHES

# One shell word as written: bare characters, quoted runs and escapes, glued together.
_WORD = re.compile(r"""(?:[^\s'"\\]+|'[^']*'|"(?:[^"\\]|\\.)*"|\\.)+""")
# Words that need no quotes (the command's {placeholders} included).
_PLAIN = re.compile(r"[\w@%+=:,./{}-]+")
LLAMA_PLACEHOLDER = "{llama}"


@dataclass(frozen=True)
class AppliedFlags:
    """What was written: the entry's new command, and whether the entry is new."""

    name: str
    config_file: Path
    cmd: str
    flags: tuple[str, ...]
    created: bool  # a new [local.NAME] table (the model was found, not configured)


class NotLlamaServerError(ValueError):
    """The command does not start llama-server, so its flags mean something else."""


def replace_flags(cmd: str, flags: Sequence[str]) -> str:
    """`cmd` with every memory flag a recommendation sets (`-c`, `-ngl`, `-np`, KV cache types,
    `--cache-ram`, ...) dropped, in any spelling, and `flags` appended; other words keep
    their own quoting. Raises ValueError when `cmd` cannot be split or has no llama-server."""
    words = _words(cmd)
    start = next((index for index, (_, value) in enumerate(words) if _is_llama_server(value)), None)
    if start is None:
        raise NotLlamaServerError(cmd)
    kept = words[: start + 1]
    index = start + 1
    while index < len(words):
        value = words[index][1]
        name, equals, _ = value.partition("=") if value.startswith("--") else (value, "", "")
        if name in RECOMMENDED_OPTIONS:
            index += 1 if equals else 2
        elif value in RECOMMENDED_SWITCHES:
            index += 1
        else:
            kept.append(words[index])
            index += 1
    return " ".join([raw for raw, _ in kept] + [quote(flag) for flag in flags])


def quote(word: str) -> str:
    """`word` as a shell word: as it is when it needs no quotes ({path} included)."""
    return word if _PLAIN.fullmatch(word) else shlex.quote(word)


def _words(cmd: str) -> list[tuple[str, str]]:
    """(as written, value) per shell word; written anew where the text does not split plainly."""
    values = shlex.split(cmd)
    raws = _WORD.findall(cmd)
    try:
        if [shlex.split(raw) for raw in raws] == [[value] for value in values]:
            return list(zip(raws, values, strict=True))
    except ValueError:
        pass
    return [(quote(value), value) for value in values]


def _is_llama_server(word: str) -> bool:
    return word == LLAMA_PLACEHOLDER or os.path.basename(word).startswith("llama-server")


def write_flags(
    config_file: Path,
    name: str,
    flags: Sequence[str],
    *,
    default_cmd: str,
    model_path: str = "",
) -> tuple[AppliedFlags, Config]:
    """Write `flags` into `[local.NAME].cmd` (its cmd, else `default_cmd`), or add that entry
    with `model_path` and `default_cmd` carrying the flags; returns what was written and the
    config as it now loads. Raises ConfigError (one line) with nothing written."""
    try:
        text, cmd, created = _edited(config_file, name, flags, default_cmd, model_path)
        written = parse_config(text, config_file)  # never write a file muxtui would not load
        write_private_atomically(config_file, text.encode("utf-8"))
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ConfigError(
            f"config error: {config_file}: not saved ({reason}); make the file and its folder "
            "readable and writable, or point --config at another file"
        ) from None
    return AppliedFlags(name, config_file, cmd, tuple(flags), created), written


def _edited(
    config_file: Path, name: str, flags: Sequence[str], default_cmd: str, model_path: str
) -> tuple[str, str, bool]:
    """(the file's new text, the entry's new cmd, whether the entry is new)."""
    import tomlkit
    from tomlkit.items import InlineTable

    document = editable_config(config_file)
    where = f"[local.{_key(name)}]"
    local = document.get("local")
    if local is not None and not isinstance(local, dict):
        raise _refuse(config_file, "`local` is not a table", "make it [local.NAME] tables")
    entry = local.get(name) if local is not None else None
    if entry is not None and not isinstance(entry, dict):
        raise _refuse(config_file, f"{where} is not a table", f"write {where} as a table")
    current = entry.get("cmd") if entry is not None else None
    base = str(current) if current else default_cmd
    try:
        cmd = replace_flags(base, flags)
    except NotLlamaServerError:
        raise _refuse(
            config_file,
            f"{where}.cmd does not start llama-server",
            "set its memory flags by hand",
        ) from None
    except ValueError as exc:
        raise _refuse(config_file, f"cannot split {where}.cmd ({exc})", "fix its quoting") from None
    if entry is not None:
        entry["cmd"] = _string_like(current, cmd)
        text = tomlkit.dumps(document)
    else:
        values: dict[str, Any] = {"path": model_path} if model_path else {}
        values["cmd"] = cmd
        if isinstance(local, InlineTable):  # `local = {...}`: no table may follow it
            local[name] = values
            text = tomlkit.dumps(document)
        else:
            text = _appended(tomlkit.dumps(document), tomlkit.dumps({"local": {name: values}}))
    return text, cmd, entry is None


def _appended(text: str, table: str) -> str:
    """`table` after the file's text, one blank line between them."""
    before = text.rstrip("\n")
    return f"{before}\n\n{table}" if before.strip() else table


def _string_like(current: object, value: str) -> object:
    """`value` as a TOML string in the style of `current` (a 'literal' stays literal)."""
    import tomlkit
    from tomlkit.items import String, StringType

    literal = isinstance(current, String) and current.type == StringType.SLL
    if literal and "'" not in value and "\n" not in value:
        return tomlkit.string(value, literal=True)
    return value


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else f'"{name}"'


def _refuse(config_file: Path, what: str, fix: str) -> ConfigError:
    return ConfigError(f"config error: {config_file}: not saved, {what}; {fix}")
