"""Model names to targets, several endpoints, fallbacks, and discovery with no config."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest

from muxtui.engine.config import (
    Config,
    LocalModelConfig,
    ModelConfig,
    NetworkConfig,
    ProviderConfig,
)
from muxtui.engine.core import Engine
from muxtui.engine.discovery import Discovered, DiscoveryTargets, discover
from muxtui.engine.errors import AuthError, UnknownModelError
from muxtui.engine.events import ChatFinished, ChatMessage, ChatStatus, ModelsChanged, ServerState
from muxtui.engine.paths import Paths
from muxtui.engine.pool import ClientPool
from muxtui.engine.retry import RetryPolicy
from muxtui.engine.router import DiscoveredModel, Router
from tests.fake_server import Failure, FakeOpenAIServer

HI = [ChatMessage("user", "hi")]
NO_RETRY = RetryPolicy(retries=0, cooldown_after=1, cooldown_s=60.0)


@pytest.fixture
def two_servers() -> Iterator[tuple[FakeOpenAIServer, FakeOpenAIServer]]:
    with FakeOpenAIServer() as first, FakeOpenAIServer() as second:
        yield first, second


def routing_config(*providers: tuple[str, ProviderConfig]) -> Config:
    return Config(
        providers=dict(providers),
        models={
            "primary": ModelConfig(
                provider="a", id="fake-model", fallbacks=["missing-model", "b:fake-model"]
            ),
            "plain": ModelConfig(provider="a"),
        },
        local={"gemma": LocalModelConfig(path="/models/gemma.gguf")},
    )


# --- resolution ------------------------------------------------------------------------------


def test_names_resolve_in_order_models_local_provider_id() -> None:
    config = routing_config(
        ("a", ProviderConfig(base_url="http://a/v1", api_key="ka", headers={"X-H": "1"})),
        ("b", ProviderConfig(kind="ollama", base_url="http://b:11434")),
    )
    router = Router(config, has_local=lambda name: name == "bundled")
    primary = router.resolve("primary")
    assert (primary.provider, primary.kind, primary.model_id, primary.local) == (
        "a",
        "openai",
        "fake-model",
        False,
    )
    assert [e.base_url for e in primary.endpoints] == ["http://a/v1"]
    assert primary.endpoints[0].api_key == "ka" and "ka" not in repr(primary.endpoints[0])
    assert router.resolve("plain").model_id == "plain"  # the id defaults to the name
    assert router.resolve("gemma").local and router.resolve("bundled").local
    remote = router.resolve("b:llama3:8b")
    assert (remote.provider, remote.kind, remote.model_id) == ("b", "ollama", "llama3:8b")
    with pytest.raises(UnknownModelError) as caught:
        router.resolve("c:thing")
    assert "unknown model 'c:thing'" in str(caught.value)
    assert "gemma" in str(caught.value) and "primary" in str(caught.value)


def test_plan_follows_fallbacks_and_skips_unknown_ones() -> None:
    config = routing_config(
        ("a", ProviderConfig(base_url="http://a/v1")), ("b", ProviderConfig(base_url="http://b/v1"))
    )
    router = Router(config, has_local=lambda name: False)
    assert [t.name for t in router.plan("primary")] == ["primary", "b:fake-model"]


def test_discovered_models_resolve_by_full_name_and_unique_id() -> None:
    router = Router(Config(), has_local=lambda name: False)
    router.update_discovered(
        {"ollama": ProviderConfig(kind="ollama", base_url="http://127.0.0.1:11434")},
        [DiscoveredModel("ollama", "qwen3:4b", "ollama")],
    )
    assert router.resolve("ollama:qwen3:4b").model_id == "qwen3:4b"
    bare = router.resolve("qwen3:4b")
    assert (bare.provider, bare.model_id) == ("ollama", "qwen3:4b")
    assert router.known_names() == ["ollama:qwen3:4b"]


def test_configured_providers_win_over_discovered_ones() -> None:
    config = Config(providers={"openrouter": ProviderConfig(base_url="http://mine/v1")})
    router = Router(config, has_local=lambda name: False)
    router.update_discovered({"openrouter": ProviderConfig(base_url="https://other/v1")}, [])
    assert router.resolve("openrouter:x").endpoints[0].base_url == "http://mine/v1"


# --- several endpoints and fallbacks through the engine --------------------------------------


@pytest.fixture
def make_engine(engines: Callable[[Config, RetryPolicy], Engine]) -> Callable[..., Engine]:
    """Engines with no retries unless the test gives its own policy."""
    return lambda config, policy=NO_RETRY: engines(config, policy)


async def chat_text(engine: Engine, model: str) -> tuple[str, list[object]]:
    events = [e async for e in engine.chat(model, HI)]
    assert isinstance(events[-1], ChatFinished)
    return events[-1].text, events


async def test_several_base_urls_share_the_load(
    two_servers: tuple[FakeOpenAIServer, FakeOpenAIServer], make_engine: object
) -> None:
    first, second = two_servers
    provider = ProviderConfig(base_url=[first.base_url, second.base_url])
    config = Config(providers={"pair": provider}, models={"m": ModelConfig("pair", "fake-model")})
    engine = make_engine(config)  # type: ignore[operator]
    for _ in range(6):  # one at a time: round-robin
        await chat_text(engine, "m")
    assert (first.chat_requests, second.chat_requests) == (3, 3)
    first.behaviour.token_gap = second.behaviour.token_gap = 0.01
    await asyncio.gather(*(chat_text(engine, "m") for _ in range(8)))  # least in flight
    assert (first.chat_requests, second.chat_requests) == (7, 7)


async def test_a_failing_endpoint_cools_down_and_its_twin_takes_over(
    two_servers: tuple[FakeOpenAIServer, FakeOpenAIServer], make_engine: object
) -> None:
    first, second = two_servers
    provider = ProviderConfig(base_url=[first.base_url, second.base_url])
    config = Config(providers={"pair": provider}, models={"m": ModelConfig("pair", "fake-model")})
    policy = RetryPolicy(retries=1, base_delay=0, cooldown_after=1, cooldown_s=60)
    engine = make_engine(config, policy)  # type: ignore[operator]
    first.fail_next(Failure(status=503))
    text, events = await chat_text(engine, "m")  # first attempt went to `first`, retry to twin
    assert text == "tok " * 5 and any(isinstance(e, ChatStatus) for e in events)
    assert (first.chat_requests, second.chat_requests) == (1, 1)
    for _ in range(4):
        await chat_text(engine, "m")
    assert (first.chat_requests, second.chat_requests) == (1, 5)


async def test_fallbacks_are_tried_in_order_on_server_errors(
    two_servers: tuple[FakeOpenAIServer, FakeOpenAIServer], make_engine: object
) -> None:
    first, second = two_servers
    config = routing_config(
        ("a", ProviderConfig(base_url=first.base_url)),
        ("b", ProviderConfig(base_url=second.base_url)),
    )
    engine = make_engine(config)  # type: ignore[operator]
    first.fail_next(Failure(status=503))
    text, events = await chat_text(engine, "primary")
    assert text == "tok " * 5
    status = next(e for e in events if isinstance(e, ChatStatus))
    assert "503" in status.message and status.message.endswith("trying b:fake-model")
    finished = events[-1]
    assert isinstance(finished, ChatFinished)
    assert (finished.stats.model, finished.stats.provider) == ("b:fake-model", "b")
    assert (first.chat_requests, second.chat_requests) == (1, 1)


async def test_no_fallback_when_the_key_is_wrong(make_engine: object) -> None:
    with (
        FakeOpenAIServer(api_key="right") as first,
        FakeOpenAIServer() as second,
    ):
        config = routing_config(
            ("a", ProviderConfig(base_url=first.base_url, api_key="wrong")),
            ("b", ProviderConfig(base_url=second.base_url)),
        )
        engine = make_engine(config)  # type: ignore[operator]
        with pytest.raises(AuthError):
            await chat_text(engine, "primary")
        assert second.requests == []


# --- discovery -------------------------------------------------------------------------------


def probe_targets(ollama: str, openai: str) -> DiscoveryTargets:
    return DiscoveryTargets(
        ollama_url=ollama,
        openai_compatible_url=openai,
        openrouter_url=openai,
        openai_url=openai,
        probe_timeout=2.0,
    )


async def test_discovery_finds_ollama_a_local_server_and_keyed_providers(
    fake_server: FakeOpenAIServer, unused_url: str
) -> None:
    published: list[Discovered] = []
    pool = ClientPool(NetworkConfig())
    try:
        found = await discover(
            Config(),
            pool,
            published.append,
            probe_targets(fake_server.root_url, fake_server.base_url),
            environ={"OPENROUTER_API_KEY": "k"},
        )
    finally:
        await pool.aclose()
    assert set(found.providers) == {"ollama", "local-8080", "openrouter"}
    assert found.providers["openrouter"].api_key_env == "OPENROUTER_API_KEY"
    names = [m.name for m in found.models]
    assert names == ["ollama:fake-model", "local-8080:fake-model", "openrouter:fake-model"]
    ollama = found.models[0]
    assert ollama.source == "ollama" and ollama.detail.startswith("loaded, unloads at 2026-")
    assert len(published) == 2  # loopback probes first, remote catalogs after
    assert [m.name for m in published[0].models] == names[:2]
    key_request = next(r for r in fake_server.requests if "authorization" in r.headers)
    assert key_request.headers["authorization"] == "Bearer k"


async def test_discovery_skips_what_does_not_answer(unused_url: str) -> None:
    pool = ClientPool(NetworkConfig())
    try:
        found = await discover(
            Config(), pool, lambda found: None, probe_targets(unused_url, unused_url), environ={}
        )
    finally:
        await pool.aclose()
    assert found == Discovered({}, (), {"ollama": False, "local-8080": False})


async def test_engine_discovers_in_the_background_and_announces_models(
    fake_server: FakeOpenAIServer, paths: Paths, unused_url: str
) -> None:
    targets = DiscoveryTargets(
        ollama_url=fake_server.root_url, openai_compatible_url=unused_url, fetch_catalogs=False
    )
    engine = Engine(Config(), paths, discover=True, discovery_targets=targets)
    events: list[object] = []
    engine.add_listener(events.append)
    async with engine:
        await engine.wait_discovered(timeout=5.0)
        entries = engine.list_models()
        found = [(e.name, e.provider, e.state, e.source) for e in entries if not e.local]
        # Ollama on loopback is on this machine: its loaded model is warm, not remote
        assert found == [("ollama:fake-model", "ollama", ServerState.WARM, "ollama")]
        # local models (the bundled Gemma, where installed) come before discovered ones
        assert [e.local for e in entries] == sorted((e.local for e in entries), reverse=True)
        choice = await engine.default_model()
        assert choice is not None and choice.name == "ollama:fake-model"
        text, _ = await chat_text(engine, "fake-model")  # a bare discovered id resolves too
        assert text == "tok " * 5
    assert any(isinstance(e, ModelsChanged) and "ollama:fake-model" in e.names for e in events)


async def test_an_unknown_name_waits_for_discovery_before_failing(
    fake_server: FakeOpenAIServer, paths: Paths, unused_url: str
) -> None:
    fake_server.behaviour.first_byte_delay = 0.0
    targets = DiscoveryTargets(
        ollama_url=fake_server.root_url, openai_compatible_url=unused_url, fetch_catalogs=False
    )
    async with Engine(Config(), paths, discovery_targets=targets) as engine:
        text, _ = await chat_text(engine, "ollama:fake-model")
        assert text == "tok " * 5
        with pytest.raises(UnknownModelError):
            await chat_text(engine, "nothing-like-it")


async def test_discovery_can_be_switched_off(paths: Paths, fake_server: FakeOpenAIServer) -> None:
    targets = DiscoveryTargets(
        ollama_url=fake_server.root_url, openai_compatible_url=fake_server.base_url
    )
    config = Config(network=NetworkConfig(discovery=False))
    async with Engine(config, paths, discovery_targets=targets) as engine:
        await engine.wait_discovered()
        assert engine.list_models() == []
    assert fake_server.requests == []


@pytest.fixture
def unused_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
