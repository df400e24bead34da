"""When to try a request again, how long to wait, and the typed error a person finally sees."""

from __future__ import annotations

import json
import random
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

# Imported before httpx on purpose: it keeps httpx's command line (and rich) unloaded.
from muxtui.engine.backends.base import Endpoint, HTTPFailure, ProtocolFailure

# isort: split
import httpx

from muxtui.engine.errors import (
    AuthError,
    BadRequestError,
    ProviderError,
    RateLimitedError,
    ServerError,
    StreamInterruptedError,
    UnreachableError,
)

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# What one attempt at a request can fail with; anything else is a bug.
ATTEMPT_FAILURES = (HTTPFailure, ProtocolFailure, httpx.HTTPError)
_SNIPPET = 160


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded attempts with exponential backoff and full jitter, and endpoint cooldowns."""

    retries: int = 3  # attempts after the first
    base_delay: float = 0.25  # seconds; attempt n waits up to base_delay * 2**n
    max_delay: float = 8.0
    max_retry_after: float = 60.0  # a longer Retry-After ends the attempts at once
    cooldown_after: int = 3  # consecutive failed attempts that put an endpoint on cooldown
    cooldown_s: float = 5.0

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait before retry number `attempt` (0-based); never below Retry-After."""
        jitter: float = rand() * min(self.max_delay, self.base_delay * (2**attempt))
        return max(jitter, retry_after or 0.0)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date; None if unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if seconds == seconds else None  # NaN is not a delay


@dataclass(frozen=True)
class AttemptFailure:
    """A failed attempt, classified: the error to raise and whether trying again may help."""

    error: ProviderError
    retryable: bool
    retry_after: float | None = None
    cause: str = ""  # a short reason, for a stream that broke after text arrived


# A local server that stops answering has usually died; the manager restarts it on demand.
_LOCAL_FIX = (
    "the local server stopped answering; its log is in the Models pane (F3) and "
    "`muxtui models` shows its state; ask again to restart it"
)


def classify(exc: BaseException, endpoint: Endpoint) -> AttemptFailure:
    """Turn an HTTP failure, a protocol mismatch or a transport error into a typed error."""
    if isinstance(exc, HTTPFailure):
        return _classify_status(exc, endpoint)
    if isinstance(exc, ProtocolFailure):
        sample = _sample(exc.sample, endpoint)
        got = f": got {sample}" if sample else ""
        message = (
            f"the reply from {endpoint.base_url} is not {exc.what}{got}; "
            "check base_url and kind for this provider"
        )
        error: ProviderError = ServerError(endpoint.provider, message)
        return AttemptFailure(
            error, retryable=False, cause=f"the server sent {sample or 'garbage'}"
        )
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        if isinstance(exc, httpx.PoolTimeout):
            what = "no free connection in the pool"
        else:
            what = "the server stopped answering"
        message = (
            f"{what} at {endpoint.base_url} ({type(exc).__name__}); "
            "check the server, or raise [network] read_timeout"
        )
        error = UnreachableError(endpoint.provider, message)
        return AttemptFailure(error, retryable=False, cause=f"{what}: {type(exc).__name__}")
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        reason = _reason(exc)
        fix = (
            _LOCAL_FIX
            if endpoint.local
            else "check that the server is running and the provider's base_url in the config"
        )
        message = f"cannot connect to {endpoint.base_url} ({reason}); {fix}"
        return AttemptFailure(UnreachableError(endpoint.provider, message), retryable=True)
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        # The server dropped the connection before sending anything we could use.
        fix = _LOCAL_FIX if endpoint.local else "check the server's log, then try again"
        message = f"the connection to {endpoint.base_url} broke ({_reason(exc)}); {fix}"
        error = ServerError(endpoint.provider, message)
        return AttemptFailure(error, retryable=True, cause=f"connection lost: {_reason(exc)}")
    if isinstance(exc, httpx.HTTPError):
        message = f"request to {endpoint.base_url} failed ({_reason(exc)}); try again"
        return AttemptFailure(ServerError(endpoint.provider, message), retryable=False)
    raise TypeError(f"not a provider failure: {exc!r}")


def interrupted(failure: AttemptFailure, endpoint: Endpoint, partial_text: str) -> ProviderError:
    """The error for a stream that broke after text was delivered: never retried."""
    cause = failure.cause or str(failure.error).removeprefix(f"{endpoint.provider}: ")
    message = (
        f"the reply broke off after {len(partial_text)} characters ({cause}); "
        "the partial reply was kept, ask again to retry"
    )
    return StreamInterruptedError(endpoint.provider, message, partial_text)


def retry_delay(
    policy: RetryPolicy, failure: AttemptFailure, endpoint: Endpoint, attempt: int, later: str
) -> float:
    """Seconds to wait before retry `attempt`, or the error to raise when there must be none.

    `later` is the fix a person reads when the server asks for a longer wait than allowed.
    """
    retry_after = failure.retry_after
    if retry_after is not None and retry_after > policy.max_retry_after:
        raise RateLimitedError(
            endpoint.provider,
            f"rate limited; the server asks to wait {retry_after:.0f} s; {later}",
            status=failure.error.status,
        )
    if not failure.retryable or attempt >= policy.retries:
        raise failure.error
    return policy.delay(attempt, retry_after)


def _classify_status(exc: HTTPFailure, endpoint: Endpoint) -> AttemptFailure:
    status, provider = exc.status, endpoint.provider
    detail = _server_message(exc, endpoint)
    if status in (401, 403):
        error: ProviderError = AuthError(provider, _auth_message(status, endpoint), status=status)
        return AttemptFailure(error, retryable=False)
    if status == 429:
        retry_after = parse_retry_after(exc.headers.get("retry-after"))
        message = (
            f"rate limited (429){_said(detail)}; wait a little and try again, "
            "or give the model fallbacks in the config"
        )
        return AttemptFailure(RateLimitedError(provider, message, status=status), True, retry_after)
    if status == 404:
        message = (
            f"not found (404){_said(detail)}; check the model id (`muxtui models`) "
            "and the provider's base_url"
        )
        return AttemptFailure(BadRequestError(provider, message, status=status), False)
    if 400 <= status < 500:
        message = (
            f"the request was rejected ({status}){_said(detail)}; "
            "check the model id and the parameters"
        )
        return AttemptFailure(BadRequestError(provider, message, status=status), False)
    if _is_json(exc) or not exc.body:
        message = f"server error ({status}){_said(detail)}; try again later"
    else:
        kind = exc.content_type.split(";")[0].strip() or "unlabelled"
        message = (
            f"the server answered {status} with a non-JSON {kind} page{_said(detail)}; "
            "check that base_url points at the API (usually ending in /v1), or try again later"
        )
    retryable = status in RETRYABLE_STATUSES
    retry_after = parse_retry_after(exc.headers.get("retry-after")) if retryable else None
    error = ServerError(provider, message, status=status)
    return AttemptFailure(
        error, retryable, retry_after, cause=f"server error {status}{_said(detail)}"
    )


def _auth_message(status: int, endpoint: Endpoint) -> str:
    name = endpoint.provider
    if not endpoint.api_key:
        where = endpoint.api_key_env or f"api_key_env in [providers.{name}]"
        return f"the server wants an API key and none was sent ({status}); set {where}"
    where = endpoint.api_key_env or f"api_key in [providers.{name}]"
    return f"the API key was rejected ({status}); check {where}"


def _is_json(exc: HTTPFailure) -> bool:
    if "json" in exc.content_type:
        return True
    try:
        json.loads(exc.body)
    except ValueError:
        return False
    return True


def _server_message(exc: HTTPFailure, endpoint: Endpoint) -> str:
    """What the server said went wrong, as one short line with any API key masked."""
    try:
        payload = json.loads(exc.body)
    except ValueError:
        return _sample(exc.body, endpoint)
    message: object = payload
    for _ in range(3):  # {"error": {"message": ...}}, {"error": "..."}, {"detail": ...}
        if not isinstance(message, Mapping):
            break
        message = next((message[k] for k in ("error", "message", "detail") if message.get(k)), None)
    if message is None or isinstance(message, Mapping | list):
        return ""
    return _one_line(str(message), endpoint)


def _sample(body: bytes, endpoint: Endpoint) -> str:
    text = body.decode("utf-8", "replace").strip()
    return repr(_one_line(text, endpoint)) if text else ""


def _one_line(text: str, endpoint: Endpoint) -> str:
    text = " ".join(text.split())
    if endpoint.api_key:
        text = text.replace(endpoint.api_key, "****")
    return text[:_SNIPPET] + ("..." if len(text) > _SNIPPET else "")


def _said(detail: str) -> str:
    return f": {detail}" if detail else ""


def _reason(exc: BaseException) -> str:
    """A short cause, looking through httpx's wrapping for the socket error underneath."""
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            break
        if isinstance(seen, ConnectionRefusedError) or "refused" in str(seen).lower():
            return "connection refused"
        if isinstance(seen, socket.gaierror):
            return "host name not found"
        seen = seen.__cause__ or seen.__context__
    text = " ".join(str(exc).split())
    return text[:_SNIPPET] or type(exc).__name__


class EndpointHealth:
    """In-flight count and consecutive failures of one endpoint, for routing and cooldowns."""

    __slots__ = ("cooling_until", "failures", "in_flight")

    def __init__(self) -> None:
        self.in_flight = 0
        self.failures = 0
        self.cooling_until = 0.0

    def succeeded(self) -> None:
        """A request went through: the endpoint is healthy again."""
        self.failures = 0
        self.cooling_until = 0.0

    def failed(self, policy: RetryPolicy, now: float | None = None) -> None:
        """An attempt failed; enough in a row start a cooldown."""
        self.failures += 1
        if self.failures >= policy.cooldown_after:
            self.cooling_until = (time.monotonic() if now is None else now) + policy.cooldown_s

    def cooling(self, now: float | None = None) -> bool:
        """Whether the endpoint should be passed over while others are available."""
        return self.cooling_until > (time.monotonic() if now is None else now)
