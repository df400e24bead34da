"""Loading the config file: converting TOML tables to the typed settings, checking the
cross-references, and finding the line a bad key is on."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from muxtui.engine.config import Config


class ConfigInvalid(Exception):
    """A value in the config file does not fit its field; names the key path and the fix."""

    def __init__(self, key_path: tuple[str, ...], what: str) -> None:
        super().__init__(what)
        self.key_path = key_path
        self.what = what


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(f'"{v}"' for v in typing.get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}s"
    if origin is dict:
        return "a table"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        tp, str(tp)
    )


def convert(tp: Any, value: Any, key_path: tuple[str, ...]) -> Any:
    """`value` (parsed TOML) as type `tp`, or ConfigInvalid naming the first key that is wrong."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ConfigInvalid(key_path, f"expected a table, got {value!r}")
        hints = typing.get_type_hints(tp)
        known = {f.name for f in dataclasses.fields(tp)}
        for key in value:
            if key not in known:
                allowed = ", ".join(sorted(known))
                raise ConfigInvalid((*key_path, key), f"unknown key; expected one of: {allowed}")
        kwargs = {k: convert(hints[k], v, (*key_path, k)) for k, v in value.items()}
        return tp(**kwargs)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigInvalid(key_path, f"expected a table, got {value!r}")
        _, value_tp = typing.get_args(tp)
        return {k: convert(value_tp, v, (*key_path, k)) for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigInvalid(key_path, f"expected {_type_name(tp)}, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [convert(item_tp, v, (*key_path, str(i))) for i, v in enumerate(value)]
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigInvalid(key_path, f"expected {_type_name(tp)}, got {value!r}")
        return value
    if origin in (types.UnionType, typing.Union):
        for alternative in typing.get_args(tp):
            try:
                return convert(alternative, value, key_path)
            except ConfigInvalid:
                continue
        raise ConfigInvalid(key_path, f"expected {_type_name(tp)}, got {value!r}")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (str, int, float, bool):
        if type(value) is not tp:
            raise ConfigInvalid(key_path, f"expected {_type_name(tp)}, got {value!r}")
        return value
    raise ConfigInvalid(key_path, f"unsupported type {tp}")  # pragma: no cover - schema bug


def check_references(config: Config) -> None:
    """Raise ConfigInvalid for settings well typed but missing, dangling or out of range."""
    for name, provider in config.providers.items():
        if not provider.urls:
            raise ConfigInvalid(("providers", name, "base_url"), "missing; set the provider's URL")
        for url in provider.urls:
            if not url.startswith(("http://", "https://")):
                raise ConfigInvalid(
                    ("providers", name, "base_url"), f"expected an http(s):// URL, got {url!r}"
                )
    for table, entries in (("models", config.models), ("local", config.local)):
        for name, entry in entries.items():
            if entry.context < 0:
                raise ConfigInvalid(
                    (table, name, "context"), "expected 0 (ask the server) or tokens"
                )
    for name, model in config.models.items():
        if not model.provider:
            raise ConfigInvalid(("models", name, "provider"), "missing; name a [providers] entry")
        if model.provider not in config.providers:
            raise ConfigInvalid(
                ("models", name, "provider"),
                f"no provider named {model.provider!r}; add [providers.{model.provider}]",
            )
    for name, local in config.local.items():
        if not local.path and not local.cmd:
            raise ConfigInvalid(("local", name), "needs `path` (a model file) or `cmd`; add one")
        if local.cmd and "{port}" not in local.cmd:
            raise ConfigInvalid(
                ("local", name, "cmd"), "must contain {port} so muxtui can pick a free port"
            )
        if not local.health.startswith("/"):
            raise ConfigInvalid(("local", name, "health"), "expected a path starting with /")
    if config.serve.max_connections < 1:
        raise ConfigInvalid(("serve", "max_connections"), "expected 1 or more")
    if not 0 < config.serve.port < 65536:
        raise ConfigInvalid(("serve", "port"), "expected a port number from 1 to 65535")
    if config.response_cache.backend == "redis" and not config.response_cache.url.startswith(
        ("redis://", "rediss://", "unix://")
    ):
        raise ConfigInvalid(
            ("response_cache", "url"), "expected a redis://, rediss:// or unix:// URL"
        )


def line_of(text: str, key_path: tuple[str, ...]) -> int | None:
    """Best-effort line number of a key path in TOML text: the longest matching prefix wins."""
    table: tuple[str, ...] = ()
    best_line, best_len = None, 0
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        header = re.match(r"^\[\[?([^\]]+)\]\]?", line)
        key_match = re.match(r"^(\"[^\"]*\"|'[^']*'|[A-Za-z0-9_\-]+)\s*=", line)
        if header:
            table = tuple(
                _unquote(p) for p in re.findall(r"\"[^\"]*\"|'[^']*'|[^.]+", header.group(1))
            )
            candidate = table
        elif key_match:
            candidate = (*table, _unquote(key_match.group(1)))
        else:
            continue
        shared = min(len(candidate), len(key_path))
        if candidate[:shared] == key_path[:shared] and shared > best_len:
            best_line, best_len = number, shared
    return best_line


def _unquote(part: str) -> str:
    return part.strip().strip('"').strip("'")
