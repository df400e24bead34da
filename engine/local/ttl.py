"""Idle timers: unload a warm server after it has been idle for its TTL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


def ttl_seconds(model_ttl: int, default_ttl: int) -> float:
    """A model's idle TTL: its own (`[local.X] ttl`), else `[cache] ttl`; 0 means never."""
    ttl = model_ttl if model_ttl >= 0 else default_ttl
    return float(max(ttl, 0))


class IdleTimers:
    """One timer per model name; `on_expired(name)` runs on the event loop when one fires."""

    def __init__(self, on_expired: Callable[[str], None]) -> None:
        self._on_expired = on_expired
        self._timers: dict[str, tuple[asyncio.TimerHandle, float]] = {}

    def arm(self, name: str, seconds: float) -> None:
        """(Re)start `name`'s timer; needs a running loop."""
        self.cancel(name)
        handle = asyncio.get_running_loop().call_later(seconds, self._fire, name)
        self._timers[name] = (handle, time.monotonic() + seconds)

    def cancel(self, name: str) -> None:
        """Stop `name`'s timer if one runs."""
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer[0].cancel()

    def cancel_all(self) -> None:
        """Stop every timer."""
        for name in list(self._timers):
            self.cancel(name)

    def seconds_left(self, name: str, now: float) -> float | None:
        """Seconds until `name` is unloaded for idleness, or None when no timer runs."""
        timer = self._timers.get(name)
        return max(0.0, timer[1] - now) if timer is not None else None

    def _fire(self, name: str) -> None:
        self._timers.pop(name, None)
        self._on_expired(name)
