"""`/metrics` for `muxtui serve`: per-model request figures and the engine's state, as text.

`ServeMetrics` implements serve's `Observer` (engine/serve/observer.py). The request path only
touches plain integers and floats in a per-model record (one dict lookup, then a `bisect` for a
histogram: about 0.3 µs, where a prometheus-client `Histogram.observe` takes about 1.7 µs with
its lock), all on the event loop's thread; prometheus-client turns them into metric families
when `/metrics` is scraped. The engine's state (endpoints, local servers, the Monitor's latest
sample, the response cache) is read at scrape time too (engine/serve/metrics_state.py), so no
background loop is needed. Names follow vLLM's (`vllm:time_to_first_token_seconds`): a
`muxtui_` prefix, base units, `_seconds`, `_bytes`, `_total`; README.md's "Metrics" lists them.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector

from muxtui.engine.serve.metrics_state import EngineStateCollector

if TYPE_CHECKING:
    from muxtui.engine.serve.metrics_state import EngineView

log = logging.getLogger("muxtui.serve.metrics")

# Bucket bounds in seconds, close to vLLM's so dashboards built for it read the same.
TTFT_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
INTER_TOKEN_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
    0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
)  # fmt: skip
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
    60.0, 120.0, 300.0, 600.0,
)  # fmt: skip

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


class FastHistogram:
    """Bucket counts and a sum as plain numbers; not thread-safe (event loop only)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count one value in the first bucket whose bound is >= it."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, cumulative count) pairs as the text format wants them, +Inf last."""
        counts = list(self.counts)  # one copy, so a scrape sees a consistent set
        running = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
            running += count
            buckets.append((_le(bound), running))
        return buckets


class ModelFigures:
    """Everything counted for one model (the labelled children, without the label look-ups)."""

    __slots__ = (
        "cache_hits",
        "cache_misses",
        "completion_tokens",
        "duration",
        "fallbacks",
        "in_flight",
        "inter_token",
        "outcomes",
        "prompt_tokens",
        "ttft",
    )

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = {}
        self.in_flight = 0
        self.ttft = FastHistogram(TTFT_BUCKETS)
        self.inter_token = FastHistogram(INTER_TOKEN_BUCKETS)
        self.duration = FastHistogram(DURATION_BUCKETS)
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self.fallbacks = 0


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
        # Its own registry: nothing from the process-global default one leaks in or clashes.
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_RequestCollector(self._models))
        if engine is not None:
            self.registry.register(EngineStateCollector(engine))
        if process:  # process_resident_memory_bytes, process_cpu_seconds_total, open fds
            ProcessCollector(registry=self.registry)

    def _figures(self, model: str) -> ModelFigures:
        figures = self._models.get(model)
        if figures is None:
            if len(self._models) >= self._max_models and model != OTHER_MODEL:
                return self._figures(OTHER_MODEL)
            figures = self._models[model] = ModelFigures()
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
        figures = self._models.get(model) or self._figures(model)
        figures.inter_token.observe(gap_s)

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
        return generate_latest(self.registry)


class _RequestCollector:
    """Turns the per-model records into metric families at scrape time."""

    def __init__(self, models: dict[str, ModelFigures]) -> None:
        self._models = models

    def describe(self) -> list[Metric]:
        """No fixed names to reserve: this registry holds only muxtui's own collectors."""
        return []

    def collect(self) -> Iterator[Metric]:
        """One family per figure, one sample (or histogram) per model."""
        requests = CounterMetricFamily(
            "muxtui_requests",
            "Chat requests that ended, by model and outcome (ok, error, client_closed, ...).",
            labels=("model", "outcome"),
        )
        in_flight = GaugeMetricFamily(
            "muxtui_requests_in_flight", "Chat requests running now.", labels=("model",)
        )
        ttft = HistogramMetricFamily(
            "muxtui_time_to_first_token_seconds",
            "From the request's arrival to the upstream's first byte, measured at the proxy.",
            labels=("model",),
        )
        inter_token = HistogramMetricFamily(
            "muxtui_inter_token_latency_seconds",
            "Gap between consecutive streamed chunks, measured at the proxy.",
            labels=("model",),
        )
        duration = HistogramMetricFamily(
            "muxtui_request_duration_seconds",
            "From the request's arrival to its end, whatever the outcome.",
            labels=("model",),
        )
        prompt = CounterMetricFamily(
            "muxtui_prompt_tokens",
            "Prompt (input) tokens, as the replies' usage reported them.",
            labels=("model",),
        )
        completion = CounterMetricFamily(
            "muxtui_completion_tokens",
            "Completion (output) tokens, as the replies' usage reported them.",
            labels=("model",),
        )
        hits = CounterMetricFamily(
            "muxtui_response_cache_hits",
            "Requests answered from the response cache.",
            labels=("model",),
        )
        misses = CounterMetricFamily(
            "muxtui_response_cache_misses",
            "Requests the response cache was consulted for and did not hold.",
            labels=("model",),
        )
        fallbacks = CounterMetricFamily(
            "muxtui_fallbacks",
            "Times a request moved on to the model's next fallback.",
            labels=("model",),
        )
        for model, figures in tuple(self._models.items()):
            labels = (model,)
            for outcome, count in tuple(figures.outcomes.items()):
                requests.add_metric((model, outcome), count)
            in_flight.add_metric(labels, figures.in_flight)
            ttft.add_metric(labels, figures.ttft.cumulative(), figures.ttft.total)
            inter_token.add_metric(
                labels, figures.inter_token.cumulative(), figures.inter_token.total
            )
            duration.add_metric(labels, figures.duration.cumulative(), figures.duration.total)
            prompt.add_metric(labels, figures.prompt_tokens)
            completion.add_metric(labels, figures.completion_tokens)
            hits.add_metric(labels, figures.cache_hits)
            misses.add_metric(labels, figures.cache_misses)
            fallbacks.add_metric(labels, figures.fallbacks)
        yield from (requests, in_flight, ttft, inter_token, duration, prompt, completion)
        yield from (hits, misses, fallbacks)


def _le(bound: float) -> str:
    """A bucket bound as Prometheus writes it ("0.005", "1.0", "+Inf")."""
    return "+Inf" if bound == float("inf") else repr(float(bound))
