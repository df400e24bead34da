"""Cache keys: the sha256 of a request's canonical JSON and the identity of what answers it.

Canonical means `json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)` over the
body without its transport fields and without `model` (an alias; the identity replaces it), so
field order, `stream` and a renamed alias never split hits, while a different model file does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

# Fields that say how the reply travels, not what it is; `model` is replaced by the identity.
IGNORED_FIELDS = frozenset({"model", "stream", "stream_options", "user"})
CACHE_HEADER = "x-muxtui-cache"


def _plain(value: Any) -> Any:
    """The value with integral floats as ints (0.0 and 0 mean the same to a server)."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def canonical_json(body: Mapping[str, Any], identity: str) -> bytes:
    """The bytes hashed into a key: the body's meaningful fields and the identity."""
    fields = {k: _plain(v) for k, v in body.items() if k not in IGNORED_FIELDS}
    text = json.dumps(
        {"body": fields, "identity": identity},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=True,
    )
    return text.encode("utf-8", "surrogatepass")


def cache_key(body: Mapping[str, Any], identity: str) -> str:
    """The sha256 hex key of a request body answered by the model `identity`."""
    return hashlib.sha256(canonical_json(body, identity)).hexdigest()


def wants_cache(body: Mapping[str, Any], header: str | None = None) -> bool:
    """Whether to use the cache: temperature 0, a seed, or `x-muxtui-cache: force`.

    `x-muxtui-cache: no-store` skips it whatever the body says.
    """
    if header:
        asked = header.strip().lower()
        if asked == "no-store":
            return False
        if asked == "force":
            return True
    temperature = body.get("temperature")
    if (
        isinstance(temperature, int | float)
        and not isinstance(temperature, bool)
        and temperature == 0
    ):
        return True
    return body.get("seed") is not None
