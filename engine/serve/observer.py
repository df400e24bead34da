"""What serve tells its metrics, in one place: the `Observer` protocol and a no-op one.

The metrics (engine/serve/metrics.py, `ServeMetrics`) implement these methods; serve calls
them and nothing else. Every method is cheap and never raises; `model` is the muxtui name the
client asked for. Outcomes are short words: "ok", "error", "client_closed", "rate_limited",
"unreachable", "bad_request", "auth_failed", "server_error".
"""

from __future__ import annotations

from typing import Protocol


class Observer(Protocol):
    """Calls serve makes while a request runs (all in the event loop, none may block)."""

    def request_started(self, model: str) -> None:
        """A chat request for `model` was accepted (body parsed, model known)."""
        ...

    def first_byte(self, model: str, seconds: float) -> None:
        """The first byte of the upstream's body, `seconds` after the request started (TTFT)."""
        ...

    def token(self, model: str, gap_s: float) -> None:
        """A streamed event after the first one, `gap_s` after the previous (inter-token);
        events that arrived in one read from the upstream come with a gap of 0."""
        ...

    def finished(
        self, model: str, outcome: str, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """The request ended with `outcome`; the tokens the reply's usage reported (0 if none)."""
        ...

    def cache(self, model: str, hit: bool) -> None:
        """The response cache was consulted for `model`: a hit or a miss."""
        ...

    def fallback(self, model: str) -> None:
        """The request for `model` moved on to its next fallback."""
        ...


class NullObserver:
    """An observer that records nothing (serve without metrics, and tests)."""

    def request_started(self, model: str) -> None:
        """Nothing."""

    def first_byte(self, model: str, seconds: float) -> None:
        """Nothing."""

    def token(self, model: str, gap_s: float) -> None:
        """Nothing."""

    def finished(
        self, model: str, outcome: str, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """Nothing."""

    def cache(self, model: str, hit: bool) -> None:
        """Nothing."""

    def fallback(self, model: str) -> None:
        """Nothing."""
