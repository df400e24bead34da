"""Who may use serve: loopback binds only without a key; the key compared in constant time."""

from __future__ import annotations

import hmac
import ipaddress
import os

from muxtui.engine.errors import UsageError

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback_host(host: str) -> bool:
    """Whether `host` is a loopback address or name (127.0.0.0/8, ::1, localhost)."""
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_key(host: str, api_key_env: str) -> str:
    """The key clients must send ("" for none); a non-loopback host without one refuses."""
    key = os.environ.get(api_key_env, "") if api_key_env else ""
    if api_key_env and not key:
        raise UsageError(
            f"serve: [serve] api_key_env names {api_key_env}, which is unset or empty; "
            f"export {api_key_env}=<a long random key> or clear api_key_env"
        )
    if not key and not is_loopback_host(host):
        raise UsageError(
            f"serve: --host {host} is not loopback and needs a key: set [serve] api_key_env "
            "to an environment variable holding one, or bind 127.0.0.1"
        )
    return key


class KeyCheck:
    """Checks `Authorization: Bearer KEY` headers against the key (every request, when set)."""

    __slots__ = ("_expected",)

    def __init__(self, key: str) -> None:
        self._expected = f"Bearer {key}".encode() if key else b""

    @property
    def required(self) -> bool:
        """Whether requests must carry the key."""
        return bool(self._expected)

    def allows(self, authorization: str | None) -> bool:
        """Whether the header carries the key (always, when no key is set)."""
        if not self._expected:
            return True
        given = (authorization or "").encode("utf-8", "replace")
        return hmac.compare_digest(given, self._expected)
