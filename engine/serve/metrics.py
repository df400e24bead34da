"""`/metrics` for `muxtui serve`: per-model request figures and the engine's state, as text.

`ServeMetrics` implements serve's `Observer` (engine/serve/observer.py). The request path only
touches plain numbers in a per-model record (one dict look-up, then a `bisect` for a histogram:
about 0.3 µs where a prometheus-client `Histogram.observe` takes 1.7 µs), all on the event
loop's thread (engine/serve/metrics_requests.py). The engine's state (endpoints, local servers,
the Monitor's latest sample, the response cache) is read when `/metrics` is scraped
(engine/serve/metrics_state.py), so no background loop is needed. Names follow vLLM's
(`vllm:time_to_first_token_seconds`): a `muxtui_` prefix and base units (`_seconds`, `_bytes`,
`_total`); README.md's "Metrics" lists them.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from contextvars import ContextVar
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.process_collector import ProcessCollector

from muxtui.engine.serve.metrics_requests import ModelFigures, RequestCollector, request_text
from muxtui.engine.serve.metrics_state import EngineStateCollector

if TYPE_CHECKING:
    from muxtui.engine.serve.metrics_state import EngineView

# Model names come from clients (`PROVIDER:ID` takes any id), so their number is capped; the
# rest are counted under this label rather than growing the exposition without bound.
OTHER_MODEL = "_other"
DEFAULT_MAX_MODELS = 200

# When the current request started: serve calls `request_started` and `finished` in the same
# request (the same task, or a task it started), so a context variable pairs them without
# serve handing back a token.
_request_started_at: ContextVar[float | None] = ContextVar(
    "muxtui_request_started_at", default=None
)


class ServeMetrics:
    """serve's Observer and its `/metrics` page: `render()` gives the Prometheus text."""

    # The classic text format every Prometheus scrapes (every name here is a legacy-valid one);
    # prometheus-client's CONTENT_TYPE_LATEST names version 1.0.0, which older scrapers refuse.
    content_type = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(
        self,
        engine: EngineView | None = None,
        *,
        max_models: int = DEFAULT_MAX_MODELS,
        process: bool = True,
    ) -> None:
        self._models: dict[str, ModelFigures] = {}
        self._max_models = max(1, max_models)
        # Own registries: nothing from prometheus-client's process-global one leaks in. `registry`
        # holds every collector (for `registry.collect()`); `render` writes the request families
        # itself and asks `_others` (engine state, process) for the rest.
        self.registry = CollectorRegistry(auto_describe=False)
        self._others = CollectorRegistry(auto_describe=False)
        self.registry.register(RequestCollector(self._models))
        collectors: list[EngineStateCollector | ProcessCollector] = []
        if engine is not None:
            collectors.append(EngineStateCollector(engine))
        if process:  # process_resident_memory_bytes, process_cpu_seconds_total, open fds
            collectors.append(ProcessCollector(registry=None))
        for collector in collectors:
            self.registry.register(collector)
            self._others.register(collector)

    def _figures(self, model: str) -> ModelFigures:
        figures = self._models.get(model)
        if figures is None:
            if len(self._models) >= self._max_models and model != OTHER_MODEL:
                return self._figures(OTHER_MODEL)
            figures = self._models[model] = ModelFigures(model)
        return figures

    # --- the Observer protocol (engine/serve/observer.py) -------------------------------------

    def request_started(self, model: str) -> None:
        """A chat request for `model` was accepted."""
        self._figures(model).in_flight += 1
        _request_started_at.set(time.perf_counter())

    def first_byte(self, model: str, seconds: float) -> None:
        """The upstream's first byte, `seconds` after the request started (TTFT)."""
        self._figures(model).ttft.observe(seconds)

    def token(self, model: str, gap_s: float) -> None:
        """A streamed chunk after the first, `gap_s` after the previous one."""
        figures = self._models.get(model)
        if figures is None:
            figures = self._figures(model)
        histogram = figures.inter_token  # FastHistogram.observe inlined: once per chunk
        histogram.counts[bisect_left(histogram.bounds, gap_s)] += 1
        histogram.total += gap_s

    def finished(
        self, model: str, outcome: str, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """The request ended with `outcome`, with the tokens its usage reported."""
        figures = self._figures(model)
        figures.outcomes[outcome] = figures.outcomes.get(outcome, 0) + 1
        if figures.in_flight > 0:
            figures.in_flight -= 1
        figures.prompt_tokens += max(0, prompt_tokens)
        figures.completion_tokens += max(0, completion_tokens)
        started = _request_started_at.get()
        if started is not None:
            figures.duration.observe(time.perf_counter() - started)
            _request_started_at.set(None)

    def cache(self, model: str, hit: bool) -> None:
        """The response cache was consulted: a hit or a miss."""
        figures = self._figures(model)
        if hit:
            figures.cache_hits += 1
        else:
            figures.cache_misses += 1

    def fallback(self, model: str) -> None:
        """The request moved on to the model's next fallback."""
        self._figures(model).fallbacks += 1

    # --- the page ------------------------------------------------------------------------------

    def render(self) -> bytes:
        """Every metric in the Prometheus text format (`content_type` says which version)."""
        return request_text(self._models).encode("utf-8") + generate_latest(self._others)
