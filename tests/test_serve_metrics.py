"""serve's /metrics: counters and histograms match the calls made, the engine's state is read at
scrape time, and nothing secret appears in the text."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator

import httpx
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample as PromSample

from muxtui.engine.config import (
    Config,
    LocalModelConfig,
    ModelConfig,
    MonitorConfig,
    ProviderConfig,
    ResponseCacheConfig,
)
from muxtui.engine.core import Engine
from muxtui.engine.paths import Paths
from muxtui.engine.serve.metrics import OTHER_MODEL, ServeMetrics
from muxtui.engine.serve.metrics_requests import ModelFigures, RequestCollector, request_text
from muxtui.engine.serve.metrics_state import endpoint_label
from muxtui.engine.serve.observer import Observer
from tests.conftest import REPO_ROOT
from tests.fake_server import FakeOpenAIServer

API_KEY = "sk-metrics-test-0123456789abcdef"
URL_PASSWORD = "url-password-9876543210"
REDIS_PASSWORD = "redis-password-5555555555"


def samples(text: bytes) -> list[PromSample]:
    """Every sample of the page, parsed by prometheus-client's own parser."""
    found: list[PromSample] = []
    for family in text_string_to_metric_families(text.decode("utf-8")):
        found += family.samples
    return found


def value(found: list[PromSample], name: str, **labels: str) -> float:
    """The one sample called `name` whose labels include `labels`."""
    matches = [
        s for s in found if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(matches) == 1, (name, labels, matches)
    return matches[0].value


def names(found: list[PromSample]) -> set[str]:
    return {s.name for s in found}


def streamed_request(
    metrics: ServeMetrics, model: str, ttft: float, gaps: list[float], usage: tuple[int, int]
) -> None:
    metrics.request_started(model)
    metrics.first_byte(model, ttft)
    for gap in gaps:
        metrics.token(model, gap)
    metrics.finished(model, "ok", *usage)


def test_counters_and_histograms_match_the_calls_made() -> None:
    metrics = ServeMetrics(process=False)
    streamed_request(metrics, "m", 0.003, [0.0002, 0.02, 0.3], (10, 4))
    streamed_request(metrics, "m", 0.2, [0.0002], (7, 2))
    metrics.request_started("m")
    metrics.cache("m", hit=False)
    metrics.fallback("m")
    metrics.fallback("m")
    metrics.finished("m", "error", 0, 0)
    metrics.request_started("m")
    metrics.cache("m", hit=True)
    metrics.finished("m", "ok", 5, 6)
    metrics.request_started("m")  # still running at the scrape
    metrics.request_started("remote:x")
    metrics.first_byte("remote:x", 1.5)
    metrics.finished("remote:x", "client_closed", 0, 0)

    found = samples(metrics.render())

    assert value(found, "muxtui_requests_total", model="m", outcome="ok") == 3
    assert value(found, "muxtui_requests_total", model="m", outcome="error") == 1
    assert value(found, "muxtui_requests_total", model="remote:x", outcome="client_closed") == 1
    assert value(found, "muxtui_requests_in_flight", model="m") == 1
    assert value(found, "muxtui_requests_in_flight", model="remote:x") == 0
    assert value(found, "muxtui_prompt_tokens_total", model="m") == 22
    assert value(found, "muxtui_completion_tokens_total", model="m") == 12
    assert value(found, "muxtui_response_cache_hits_total", model="m") == 1
    assert value(found, "muxtui_response_cache_misses_total", model="m") == 1
    assert value(found, "muxtui_fallbacks_total", model="m") == 2
    assert value(found, "muxtui_fallbacks_total", model="remote:x") == 0

    ttft = "muxtui_time_to_first_token_seconds"
    assert value(found, ttft + "_count", model="m") == 2
    assert value(found, ttft + "_sum", model="m") == pytest.approx(0.203)
    assert value(found, ttft + "_bucket", model="m", le="0.0025") == 0
    assert value(found, ttft + "_bucket", model="m", le="0.005") == 1
    assert value(found, ttft + "_bucket", model="m", le="0.25") == 2
    assert value(found, ttft + "_bucket", model="m", le="+Inf") == 2
    assert value(found, ttft + "_count", model="remote:x") == 1

    itl = "muxtui_inter_token_latency_seconds"
    assert value(found, itl + "_count", model="m") == 4
    assert value(found, itl + "_bucket", model="m", le="0.0005") == 2
    assert value(found, itl + "_bucket", model="m", le="0.025") == 3
    assert value(found, itl + "_bucket", model="m", le="0.3") == 4
    assert value(found, itl + "_sum", model="m") == pytest.approx(0.3204)

    # Every request that finished was timed; the one still running is not yet.
    assert value(found, "muxtui_request_duration_seconds_count", model="m") == 4
    assert value(found, "muxtui_request_duration_seconds_count", model="remote:x") == 1


def test_a_value_on_a_bucket_bound_counts_in_that_bucket() -> None:
    metrics = ServeMetrics(process=False)
    metrics.request_started("m")
    metrics.first_byte("m", 0.01)
    metrics.finished("m", "ok", 0, 0)
    found = samples(metrics.render())
    ttft = "muxtui_time_to_first_token_seconds_bucket"
    assert value(found, ttft, model="m", le="0.005") == 0
    assert value(found, ttft, model="m", le="0.01") == 1


async def test_concurrent_requests_are_each_timed_in_their_own_task() -> None:
    metrics = ServeMetrics(process=False)
    release = asyncio.Event()
    both_started = asyncio.Barrier(3)

    async def request(model: str) -> None:
        metrics.request_started(model)
        await both_started.wait()
        await release.wait()
        metrics.finished(model, "ok", 1, 1)

    tasks = [asyncio.create_task(request(m)) for m in ("a", "b")]
    await both_started.wait()
    running = samples(metrics.render())
    assert value(running, "muxtui_requests_in_flight", model="a") == 1
    assert value(running, "muxtui_requests_in_flight", model="b") == 1
    release.set()
    await asyncio.gather(*tasks)

    found = samples(metrics.render())
    for model in ("a", "b"):
        assert value(found, "muxtui_requests_in_flight", model=model) == 0
        assert value(found, "muxtui_request_duration_seconds_count", model=model) == 1
    # A `finished` with no `request_started` in its context is counted but not timed.
    metrics.finished("a", "error", 0, 0)
    found = samples(metrics.render())
    assert value(found, "muxtui_requests_total", model="a", outcome="error") == 1
    assert value(found, "muxtui_request_duration_seconds_count", model="a") == 1


def test_model_names_past_the_cap_are_counted_together() -> None:
    metrics = ServeMetrics(process=False, max_models=2)
    for model in ("one", "two", "three", "four"):
        metrics.request_started(model)
        metrics.token(model, 0.01)
        metrics.finished(model, "ok", 1, 1)
    found = samples(metrics.render())
    models = {s.labels["model"] for s in found if s.name == "muxtui_requests_total"}
    assert models == {"one", "two", OTHER_MODEL}
    assert value(found, "muxtui_requests_total", model=OTHER_MODEL, outcome="ok") == 2
    assert value(found, "muxtui_inter_token_latency_seconds_count", model=OTHER_MODEL) == 2


def test_its_own_registry_and_the_text_format() -> None:
    metrics: Observer = ServeMetrics()  # mypy checks it is serve's Observer
    assert isinstance(metrics, ServeMetrics)
    metrics.request_started("m")
    metrics.finished("m", "ok", 1, 2)
    page = metrics.render()
    assert metrics.content_type.startswith("text/plain; version=0.0.4")
    found = samples(page)
    assert value(found, "process_resident_memory_bytes") > 0
    assert b"muxtui_" not in prometheus_client.generate_latest(prometheus_client.REGISTRY)
    # Two instances do not clash (no process-global registry behind them).
    assert ServeMetrics().render() != b""


def test_the_request_text_is_what_prometheus_client_writes() -> None:
    metrics = ServeMetrics(process=False)
    odd = 'a "quoted" model\\with\na newline'
    for model in ("m", odd, "remote:x"):
        streamed_request(metrics, model, 0.05, [0.001, 0.7, 9.0], (3, 4))
        metrics.cache(model, hit=True)
    metrics.finished(odd, 'out"come', 1, 1)
    figures: dict[str, ModelFigures] = metrics._models
    figures["m"].prompt_tokens = 12_345_678  # past where Go's number format turns exponential
    figures["m"].inter_token.counts[3] = 2_000_000
    registry = prometheus_client.CollectorRegistry()
    registry.register(RequestCollector(figures))

    assert request_text(figures) == prometheus_client.generate_latest(registry).decode()
    assert metrics.render().startswith(request_text(figures).encode())
    collected = {family.name for family in metrics.registry.collect()}
    assert {"muxtui_requests", "muxtui_time_to_first_token_seconds"} <= collected


@pytest.mark.parametrize(
    ("url", "label"),
    [
        (f"http://user:{URL_PASSWORD}@10.0.0.5:8080/v1?key={URL_PASSWORD}", "10.0.0.5:8080"),
        ("https://openrouter.ai/api/v1", "openrouter.ai:443"),
        ("http://[::1]:9000/v1", "[::1]:9000"),
        ("http://gpu-box/v1", "gpu-box:80"),
        ("not a url", "invalid"),
    ],
)
def test_an_endpoint_is_labelled_by_host_and_port_only(url: str, label: str) -> None:
    assert endpoint_label(url) == label


@pytest.fixture
def fake_local_cmd() -> Iterator[str]:
    script = REPO_ROOT / "tests" / "fake_server.py"
    yield f"{sys.executable} {script} --port {{port}} --models served-id --tokens 3"


async def test_engine_state_is_read_at_scrape_time_without_secrets(
    fake_server: FakeOpenAIServer, paths: Paths, fake_local_cmd: str
) -> None:
    port = fake_server.base_url.split(":")[2].split("/")[0]
    url = f"http://user:{URL_PASSWORD}@127.0.0.1:{port}/v1"
    config = Config(
        providers={
            "fake": ProviderConfig(kind="openai", base_url=url, api_key=API_KEY),
            "other": ProviderConfig(kind="openai", base_url="http://127.0.0.1:9/v1"),
        },
        models={"m": ModelConfig(provider="fake", id="fake-model")},
        local={"little": LocalModelConfig(cmd=fake_local_cmd, ttl=0)},
        response_cache=ResponseCacheConfig(
            backend="redis", url=f"redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0"
        ),
        monitor=MonitorConfig(interval=0.2),
    )
    async with Engine(config, paths, discover=False) as engine:
        metrics = ServeMetrics(engine)
        before = samples(metrics.render())
        labels = {"provider": "fake", "endpoint": f"127.0.0.1:{port}"}
        assert value(before, "muxtui_endpoint_breaker_open", **labels) == 0
        assert value(before, "muxtui_local_server_state", model="little", state="cold") == 1
        assert value(before, "muxtui_local_server_state", model="little", state="warm") == 0
        assert "muxtui_system_memory_total_bytes" not in names(before)  # no sample yet

        for _ in range(engine.retry_policy.cooldown_after):
            engine.router.health(url).failed(engine.retry_policy)
        await engine.preload("little")
        sampler = engine.samples()
        try:
            sample = await asyncio.wait_for(anext(sampler), 30)
            while sample.server("little") is None:  # the server is seen from the next sample
                sample = await asyncio.wait_for(anext(sampler), 30)
        finally:
            await sampler.aclose()
        page = metrics.render()

    found = samples(page)
    assert value(found, "muxtui_endpoint_breaker_open", **labels) == 1
    assert value(found, "muxtui_endpoint_consecutive_failures", **labels) == 3
    assert value(found, "muxtui_endpoint_requests_in_flight", **labels) == 0
    other = {"provider": "other", "endpoint": "127.0.0.1:9"}
    assert value(found, "muxtui_endpoint_breaker_open", **other) == 0
    assert value(found, "muxtui_local_server_state", model="little", state="warm") == 1
    assert value(found, "muxtui_local_server_state", model="little", state="cold") == 0
    assert value(found, "muxtui_local_server_load_time_seconds", model="little") > 0
    assert value(found, "muxtui_local_server_pinned", model="little") == 0
    assert value(found, "muxtui_local_server_resident_memory_bytes", model="little") > 0
    assert value(found, "muxtui_system_memory_total_bytes") == sample.ram_total
    assert 0 <= value(found, "muxtui_system_cpu_utilization_ratio") <= 1
    assert value(found, "muxtui_monitor_sample_timestamp_seconds") == pytest.approx(sample.ts)

    text = page.decode("utf-8")
    for secret in (API_KEY, URL_PASSWORD, REDIS_PASSWORD, "user:"):
        assert secret not in text


async def test_serve_metrics_count_what_was_sent(
    fake_server: FakeOpenAIServer, paths: Paths
) -> None:
    from muxtui.engine.serve.server import Server
    from tests.serve_support import FAST, dead_port, serve_config

    config = serve_config(fake_server.base_url, dead_url=f"http://127.0.0.1:{dead_port()}/v1")
    config.providers["fake"].api_key = API_KEY
    hello = {"messages": [{"role": "user", "content": "hello there"}]}
    stream = {"stream": True, "stream_options": {"include_usage": True}}
    async with Engine(config, paths, discover=False, retry_policy=FAST) as engine:
        metrics = ServeMetrics(engine)
        server = Server(engine, "127.0.0.1", 0, observer=metrics, monitor=False)
        await server.start()
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                chat = f"{server.url}/v1/chat/completions"
                for body in (
                    {"model": "m", **hello},
                    {"model": "m", **hello},
                    {"model": "m", **hello, **stream},
                    {"model": "down", **hello, **stream},
                    {"model": "m", **hello, "temperature": 0},  # a miss, stored
                    {"model": "m", **hello, "temperature": 0},  # a hit
                ):
                    assert (await client.post(chat, json=body)).status_code == 200
                assert (await client.post(chat, json={"model": "nope", **hello})).status_code == 404
                page = await client.get(f"{server.url}/metrics")
        finally:
            await server.stop()

    assert page.status_code == 200
    assert page.headers["content-type"] == metrics.content_type
    found = samples(page.content)
    assert value(found, "muxtui_requests_total", model="m", outcome="ok") == 5
    assert value(found, "muxtui_requests_total", model="down", outcome="ok") == 1
    assert "nope" not in {s.labels.get("model") for s in found}
    assert value(found, "muxtui_fallbacks_total", model="down") == 1
    assert value(found, "muxtui_prompt_tokens_total", model="m") == 5 * 2
    assert value(found, "muxtui_completion_tokens_total", model="m") == 5 * 5
    assert value(found, "muxtui_time_to_first_token_seconds_count", model="m") == 1
    assert value(found, "muxtui_time_to_first_token_seconds_count", model="down") == 1
    assert value(found, "muxtui_inter_token_latency_seconds_count", model="m") > 0
    assert value(found, "muxtui_request_duration_seconds_count", model="m") == 5
    assert value(found, "muxtui_requests_in_flight", model="m") == 0
    assert value(found, "muxtui_response_cache_misses_total", model="m") == 1
    assert value(found, "muxtui_response_cache_hits_total", model="m") == 1
    assert value(found, "muxtui_response_cache_healthy", backend="sqlite") == 1
    dead = [s for s in found if s.name == "muxtui_endpoint_consecutive_failures"]
    assert {s.labels["provider"] for s in dead} == {"fake", "dead"}
    assert API_KEY not in page.text


async def test_the_cache_health_gauge_follows_the_backend(paths: Paths) -> None:
    from tests.serve_support import dead_port

    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{dead_port()}/0"
    config = Config(response_cache=ResponseCacheConfig(backend="redis", url=url))
    async with Engine(config, paths, discover=False) as engine:
        metrics = ServeMetrics(engine, process=False)
        assert (
            value(samples(metrics.render()), "muxtui_response_cache_healthy", backend="redis") == 1
        )
        assert await engine.response_cache.get("0" * 64) is None  # Redis is down: a miss
        page = metrics.render()
    assert value(samples(page), "muxtui_response_cache_healthy", backend="redis") == 0
    assert REDIS_PASSWORD not in page.decode()

    async with Engine(Config(), paths, discover=False) as engine:
        found = samples(ServeMetrics(engine, process=False).render())
    assert value(found, "muxtui_response_cache_healthy", backend="sqlite") == 1
    off = Config(response_cache=ResponseCacheConfig(backend="off"))
    async with Engine(off, paths, discover=False) as engine:
        found = samples(ServeMetrics(engine, process=False).render())
    assert "muxtui_response_cache_healthy" not in names(found)
