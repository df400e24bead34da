"""A batch's counters, recent rates and latest items, turned into `BatchProgress` snapshots."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from muxtui.engine.events import BatchItem, BatchProgress, BatchState

RATE_WINDOW_S = 10.0  # rates are over the last this many seconds, so the ETA follows changes
RECENT_ITEMS = 20
_PREVIEW = 120


class Tracker:
    """Counts what a run did; cheap per item, the snapshot does the rest."""

    def __init__(self, job: int) -> None:
        self.job = job
        self.state = BatchState.PREPARING
        self.message = ""
        self.total = 0
        self.skipped = 0
        self.succeeded = 0
        self.failed = 0
        self.in_flight = 0
        self.concurrency = 0
        self.requests = 0  # requests finished, either way (bad lines are not requests)
        self.tokens = 0
        self._started = time.monotonic()
        self._samples: deque[tuple[float, int, int]] = deque()
        self._recent: deque[tuple[str, int, bool, float, int, Any]] = deque(maxlen=RECENT_ITEMS)

    def item_done(
        self, custom_id: str, line: int, ok: bool, latency_s: float, tokens: int, detail: Any
    ) -> None:
        """One item finished: a reply (`detail` its parsed body) or an error (`detail` its text)."""
        if ok:
            self.succeeded += 1
        else:
            self.failed += 1
        self.requests += 1
        self.tokens += tokens
        self._recent.append((custom_id, line, ok, latency_s, tokens, detail))

    def bad_line(self, custom_id: str, line: int, message: str) -> None:
        """A line that was never sent."""
        self.failed += 1
        self._recent.append((custom_id, line, False, 0.0, 0, message))

    def snapshot(self) -> BatchProgress:
        """The counters now, with rates over the recent window."""
        now = time.monotonic()
        samples = self._samples
        samples.append((now, self.requests, self.tokens))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW_S:
            samples.popleft()
        then, requests_then, tokens_then = samples[0]
        span = now - then
        rate = (self.requests - requests_then) / span if span > 0.2 else 0.0
        token_rate = (self.tokens - tokens_then) / span if span > 0.2 else 0.0
        done = self.skipped + self.succeeded + self.failed
        remaining = max(0, self.total - done)
        running = self.state is BatchState.RUNNING
        eta = remaining / rate if rate > 0 and running else (0.0 if not remaining else None)
        return BatchProgress(
            job=self.job,
            state=self.state,
            total=self.total,
            skipped=self.skipped,
            succeeded=self.succeeded,
            failed=self.failed,
            in_flight=self.in_flight,
            requests_per_s=rate,
            tokens_per_s=token_rate,
            eta_s=eta,
            elapsed_s=now - self._started,
            concurrency=self.concurrency,
            message=self.message,
            recent=tuple(_item(*entry) for entry in self._recent),
        )


def _item(
    custom_id: str, line: int, ok: bool, latency_s: float, tokens: int, detail: Any
) -> BatchItem:
    return BatchItem(custom_id, line, ok, latency_s, tokens, _preview(detail))


def _preview(detail: Any) -> str:
    """The start of a reply's text, or an error message, on one line."""
    if isinstance(detail, str):
        text = detail
    else:
        try:
            text = str(detail["choices"][0]["message"].get("content") or "")
        except (KeyError, IndexError, TypeError, AttributeError):
            text = ""
    return " ".join(text[: _PREVIEW * 2].split())[:_PREVIEW]
