"""Keeping a local server's secrets (an `--api-key` argument, `[local].env` values) out of logs,
events, model entries and error messages."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

MASK = "****"
# Flags whose value is a secret: --api-key, --hf-token, --token, --password, --secret, and
# prefixed forms like --hf-token. A flag naming a file (--api-key-file) is not itself secret.
_SECRET_FLAG = re.compile(r"^--?(?:[A-Za-z0-9]+[-_])*(?:api[-_]?key|token|password|secret)$", re.I)
# Values this short are settings ("0", "1", "on"), not secrets; masking them would garble text.
_MIN_SECRET_LEN = 4


def is_secret_flag(token: str) -> bool:
    """Whether `token` is a command-line flag whose value is a secret."""
    return bool(_SECRET_FLAG.match(token))


def mask_argv(argv: Iterable[str]) -> list[str]:
    """The argv with every secret flag's value replaced by the mask (`--api-key ****`)."""
    masked: list[str] = []
    hide_next = False
    for token in argv:
        if hide_next:
            masked.append(MASK)
            hide_next = False
            continue
        flag, equals, _value = token.partition("=")
        if equals and is_secret_flag(flag):
            masked.append(f"{flag}={MASK}")
            continue
        hide_next = is_secret_flag(token)
        masked.append(token)
    return masked


def secret_values(argv: Iterable[str], env: Mapping[str, str]) -> frozenset[str]:
    """The secrets a server was given: secret flags' values and every `[local].env` value."""
    found: list[str] = []
    tokens = list(argv)
    for index, token in enumerate(tokens):
        flag, equals, value = token.partition("=")
        if equals and is_secret_flag(flag):
            found.append(value)
        elif is_secret_flag(token) and index + 1 < len(tokens):
            found.append(tokens[index + 1])
    found += env.values()
    return frozenset(value for value in found if len(value) >= _MIN_SECRET_LEN)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret replaced by the mask, longest first."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text
