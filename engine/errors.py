"""Errors a person can act on: each one's text is one line naming the thing and the fix."""

from __future__ import annotations


class MuxtuiError(Exception):
    """Base of every error caused by input, config or the outside world; exit status 2."""

    exit_code = 2
    prefix = "muxtui: "  # how the command line introduces the one-line message


class ConfigError(MuxtuiError):
    """The config file is missing, malformed or inconsistent."""

    prefix = ""  # the message already starts with "config error:"


class UsageError(MuxtuiError):
    """A command-line argument or input file is wrong."""


class SettingsError(UsageError, ValueError):
    """A chat setting is out of its range; the message says the range."""


class UnknownModelError(MuxtuiError):
    """A model name matches nothing in the config, discovery or `PROVIDER:ID` form."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        hint = ""
        if known:
            shown = ", ".join(sorted(known)[:6]) + (", ..." if len(known) > 6 else "")
            hint = f" (known: {shown})"
        super().__init__(
            f"unknown model '{name}'{hint}: run `muxtui models` to list them, "
            "or add it under [models] or [local] in the config"
        )
        self.name = name


class ProviderError(MuxtuiError):
    """A provider answered with an error, or could not be reached."""

    def __init__(self, provider: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.status = status


class AuthError(ProviderError):
    """The provider rejected the API key (401/403)."""


class RateLimitedError(ProviderError):
    """The provider kept answering 429 after the retries."""


class UnreachableError(ProviderError):
    """No connection could be made, or it timed out."""


class BadRequestError(ProviderError):
    """The provider rejected the request itself (400, 404, 422)."""


class ServerError(ProviderError):
    """The provider failed (5xx) or answered with something that is not the protocol."""


class StreamInterruptedError(ProviderError):
    """A stream broke after text was delivered; `partial_text` holds what arrived."""

    def __init__(self, provider: str, message: str, partial_text: str) -> None:
        super().__init__(provider, message)
        self.partial_text = partial_text


class TruncatedReplyError(StreamInterruptedError):
    """The stream ended cleanly but without saying the reply was over: a cut-off reply."""


class LocalServerError(MuxtuiError):
    """A local model server could not be started or died; the message carries its log tail."""

    def __init__(self, model: str, message: str, log_tail: str = "") -> None:
        text = f"local model '{model}': {message}"
        if log_tail:
            text += f" (last log line: {log_tail.strip().splitlines()[-1][:200]})"
        super().__init__(text)
        self.model = model
        self.log_tail = log_tail
