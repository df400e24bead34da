"""The secrets muxtui knows of, and the one way they are kept out of output, errors and history.

Secrets are API keys, header values (all but a few clearly public headers), every `[local]`
env value, and the values of secret-looking command options (`--api-key X`, `--hf-token=X`).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from muxtui.engine.config import LocalModelConfig, ProviderConfig

MASK = "****"
# Shorter values are too common in ordinary text to replace without mangling it, and too short
# to be a credential anyone relies on.
MIN_SECRET_LENGTH = 6

# Headers whose values say nothing secret; every other header value counts as a secret.
PUBLIC_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "content-type",
        "user-agent",
        "http-referer",
        "referer",
        "x-title",
    }
)

# An option of a command line and its value; `_is_secret_option` says which ones hold secrets.
_OPTION_VALUE = re.compile(
    r"(?P<option>--?[A-Za-z][A-Za-z0-9_-]*)(?P<sep>=|\s+)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s\"'-][^\s\"']*)"
)
_SECRET_WORD = re.compile(r"key|token|secret|passw|auth", re.IGNORECASE)


def _is_secret_option(option: str) -> bool:
    """`--api-key`, `--hf-token` and the like; `--ssl-key-file` names a file, not a secret."""
    name = option.lower()
    return bool(_SECRET_WORD.search(name)) and not name.endswith(("file", "path", "dir"))


def is_public_header(name: str) -> bool:
    """Whether a header's value is clearly not a secret (shown in `muxtui config`)."""
    return name.lower() in PUBLIC_HEADERS


def mask_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers with every value but the clearly public ones masked."""
    return {name: value if is_public_header(name) else MASK for name, value in headers.items()}


def mask_cmd(cmd: str) -> str:
    """A command template with the values of secret-looking options masked."""

    def masked(match: re.Match[str]) -> str:
        if not _is_secret_option(match["option"]):
            return match[0]
        return f"{match['option']}{match['sep']}{MASK}"

    return _OPTION_VALUE.sub(masked, cmd)


def cmd_secrets(cmd: str) -> list[str]:
    """The values of secret-looking options in a command template."""
    values = []
    for match in _OPTION_VALUE.finditer(cmd):
        if not _is_secret_option(match["option"]):
            continue
        value = match["value"]
        try:
            values += shlex.split(value)
        except ValueError:
            values.append(value)
    return values


def header_secrets(headers: Mapping[str, str]) -> list[str]:
    """Secret header values, and the token of a `Bearer TOKEN`-style value on its own."""
    values = []
    for name, value in headers.items():
        if not is_public_header(name):
            values.append(value)
            values += value.split()[1:]
    return values


def known_secrets(
    providers: Iterable[ProviderConfig], local: Iterable[LocalModelConfig]
) -> tuple[str, ...]:
    """Every secret value the config (and the environment it names) holds, longest first."""
    values: list[str] = []
    for provider in providers:
        values += [provider.api_key, provider.resolved_api_key()]
        values += header_secrets(provider.headers)
    for entry in local:
        values += entry.env.values()
        values += cmd_secrets(entry.cmd)
    unique = {value for value in values if len(value) >= MIN_SECRET_LENGTH}
    return tuple(sorted(unique, key=len, reverse=True))


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret in `secrets` replaced by the mask (longest first)."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_SECRET_LENGTH and secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_error(error: BaseException, secrets: Iterable[str]) -> BaseException:
    """The same error with secrets masked in its message (changed in place, for `raise`)."""
    secrets = tuple(secrets)
    error.args = tuple(redact(arg, secrets) if isinstance(arg, str) else arg for arg in error.args)
    return error
