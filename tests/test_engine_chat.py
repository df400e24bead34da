"""The Engine facade: events of a turn, stats, listeners, laziness and local servers."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from muxtui.engine.config import Config, LocalModelConfig, ModelConfig, ProviderConfig
from muxtui.engine.core import Engine
from muxtui.engine.default_model import ModelChoice
from muxtui.engine.errors import LocalServerError
from muxtui.engine.events import (
    ChatDelta,
    ChatFinished,
    ChatMessage,
    ChatParams,
    ChatStatus,
    ContextFitted,
    ModelEntry,
    ServerState,
)
from muxtui.engine.paths import Paths
from tests.conftest import REPO_ROOT
from tests.fake_server import Behaviour, FakeOpenAIServer

HI = [ChatMessage("system", "be brief"), ChatMessage("user", "hi there")]


def config_for(server: FakeOpenAIServer, kind: str = "openai") -> Config:
    url = server.base_url if kind == "openai" else server.root_url
    return Config(
        providers={"fake": ProviderConfig(kind=kind, base_url=url)},  # type: ignore[arg-type]
        models={"m": ModelConfig(provider="fake", id="fake-model")},
    )


async def run_turn(
    engine: Engine, model: str = "m", params: ChatParams | None = None
) -> list[object]:
    turn = engine.chat(model, HI, params or ChatParams())
    return [event async for event in turn if not isinstance(event, ContextFitted)]


async def test_a_turn_streams_deltas_then_finishes_with_stats(
    fake_server: FakeOpenAIServer, paths: Paths
) -> None:
    async with Engine(config_for(fake_server), paths, discover=False) as engine:
        events = await run_turn(engine)
    assert events[:-1] == [ChatDelta("tok ")] * 5
    finished = events[-1]
    assert isinstance(finished, ChatFinished)
    assert (finished.text, finished.finish_reason) == ("tok " * 5, "stop")
    stats = finished.stats
    assert (stats.model, stats.provider) == ("m", "fake")
    assert (stats.prompt_tokens, stats.completion_tokens) == (4, 5)
    assert 0 < stats.ttft_s <= stats.total_s
    assert stats.tokens_per_s > 0
    sent = fake_server.requests[-1].json
    assert sent is not None and sent["messages"][0] == {"role": "system", "content": "be brief"}


async def test_server_timings_and_max_tokens_reach_the_stats(paths: Paths) -> None:
    with FakeOpenAIServer(behaviour=Behaviour(include_timings=True, tokens=10)) as server:
        async with Engine(config_for(server), paths, discover=False) as engine:
            events = await run_turn(engine, params=ChatParams(max_tokens=3, temperature=0.0))
    finished = events[-1]
    assert isinstance(finished, ChatFinished)
    assert finished.finish_reason == "length"
    assert finished.stats.completion_tokens == 3
    assert finished.stats.tokens_per_s > 0


async def test_a_whole_reply_without_streaming(fake_server: FakeOpenAIServer, paths: Paths) -> None:
    async with Engine(config_for(fake_server), paths, discover=False) as engine:
        events = await run_turn(engine, params=ChatParams(stream=False))
    assert events[0] == ChatDelta("tok " * 5)
    finished = events[-1]
    assert isinstance(finished, ChatFinished) and finished.stats.completion_tokens == 5


async def test_an_ollama_provider_streams_with_its_stats(
    fake_server: FakeOpenAIServer, paths: Paths
) -> None:
    async with Engine(config_for(fake_server, "ollama"), paths, discover=False) as engine:
        events = await run_turn(engine)
    assert events[:-1] == [ChatDelta("tok ")] * 5
    finished = events[-1]
    assert isinstance(finished, ChatFinished)
    assert (finished.stats.prompt_tokens, finished.stats.completion_tokens) == (4, 5)
    assert finished.stats.tokens_per_s > 0
    assert fake_server.requests[-1].path == "/api/chat"


async def test_construction_and_start_do_no_network_and_no_disk_until_needed(
    fake_server: FakeOpenAIServer, paths: Paths
) -> None:
    engine = Engine(config_for(fake_server), paths, discover=False)
    assert not paths.history_db.exists()
    assert len(engine.pool) == 0
    await engine.start()
    try:
        assert paths.history_db.exists()
        assert fake_server.requests == [] and len(engine.pool) == 0
        assert [e.name for e in engine.list_models() if not e.local] == ["m"]
        choice = await engine.default_model()  # asks the provider whether it answers
        assert choice is not None and choice.name == "m"
    finally:
        await engine.aclose()
    await engine.aclose()  # closing twice is harmless


async def test_last_used_model_is_the_default(fake_server: FakeOpenAIServer, paths: Paths) -> None:
    config = config_for(fake_server)
    config.ui.last_model = "fake:fake-model"
    async with Engine(config, paths, discover=False) as engine:
        assert await engine.default_model() == ModelChoice("fake:fake-model", "the last used model")
        config.ui.last_model = "gone"
        choice = await engine.default_model()
        assert choice == ModelChoice("m", "a configured model that answers")


async def test_listeners_get_events_until_they_unsubscribe(paths: Paths) -> None:
    engine = Engine(Config(), paths, discover=False)
    seen: list[object] = []

    def broken(event: object) -> None:
        raise RuntimeError("listener bug")

    engine.add_listener(broken)
    unsubscribe = engine.add_listener(seen.append)
    engine.emit("one")
    unsubscribe()
    unsubscribe()
    engine.emit("two")
    assert seen == ["one"]


# --- local servers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Endpoint:
    base_url: str
    model_id: str
    api_key: str = ""


class StubServers:
    """A server manager whose one model is an already running fake server."""

    def __init__(self, server: FakeOpenAIServer) -> None:
        self.server = server
        self.held = 0
        self.released = 0

    def has(self, name: str) -> bool:
        return name == "little"

    def names(self) -> list[str]:
        return ["little"]

    def entries(self) -> list[ModelEntry]:
        return [ModelEntry("little", "local", True, ServerState.COLD)]

    @contextlib.asynccontextmanager
    async def _lease(self, on_status: object) -> AsyncIterator[_Endpoint]:
        assert callable(on_status)
        on_status("starting little")
        await asyncio.sleep(0.01)
        on_status("little ready in 0.0 s")
        self.held += 1
        try:
            yield _Endpoint(self.server.base_url + "/", "fake-model")
        finally:
            self.released += 1

    def acquire(self, name: str, on_status: object = None) -> object:
        return self._lease(on_status)

    async def aclose(self) -> None:
        return None


async def test_a_local_model_forwards_its_start_progress_then_streams(
    fake_server: FakeOpenAIServer, paths: Paths
) -> None:
    async with Engine(Config(), paths, discover=False) as engine:
        stub = StubServers(fake_server)
        engine.servers = stub  # type: ignore[assignment]
        events = await run_turn(engine, "little")
    assert events[:2] == [ChatStatus("starting little"), ChatStatus("little ready in 0.0 s")]
    assert events[2:-1] == [ChatDelta("tok ")] * 5
    finished = events[-1]
    assert isinstance(finished, ChatFinished)
    assert (finished.stats.model, finished.stats.provider) == ("little", "local")
    assert (stub.held, stub.released) == (1, 1)
    assert fake_server.requests[-1].json["model"] == "fake-model"  # type: ignore[index]


async def test_cancelling_a_local_turn_releases_the_server(
    paths: Paths,
) -> None:
    with FakeOpenAIServer(behaviour=Behaviour(tokens=1000, token_gap=0.01)) as server:
        async with Engine(Config(), paths, discover=False) as engine:
            stub = StubServers(server)
            engine.servers = stub  # type: ignore[assignment]
            stream = engine.chat("little", HI)
            async for event in stream:
                if isinstance(event, ChatDelta):
                    break
            await stream.aclose()
            assert (stub.held, stub.released) == (1, 1)
            await server.wait_for(lambda: server.disconnects_mid_stream == 1)


@pytest.fixture
def fake_local_cmd() -> Iterator[str]:
    script = REPO_ROOT / "tests" / "fake_server.py"
    yield f"{sys.executable} {script} --port {{port}} --models served-id --tokens 3"


async def test_a_configured_local_server_is_started_and_used(
    paths: Paths, fake_local_cmd: str
) -> None:
    config = Config(local={"little": LocalModelConfig(cmd=fake_local_cmd, ttl=0)})
    async with Engine(config, paths, discover=False) as engine:
        first = await run_turn(engine, "little")
        second = await run_turn(engine, "little")
    statuses = [e for e in first if isinstance(e, ChatStatus)]
    assert statuses and statuses[0].message.startswith("starting little")
    assert [e for e in first if isinstance(e, ChatDelta)] == [ChatDelta("tok ")] * 3
    assert not any(isinstance(e, ChatStatus) for e in second)  # warm: no start this time
    finished = second[-1]
    assert isinstance(finished, ChatFinished)
    assert (finished.text, finished.stats.provider) == ("tok " * 3, "local")


async def test_a_local_server_that_cannot_start_is_a_local_server_error(paths: Paths) -> None:
    config = Config(local={"broken": LocalModelConfig(cmd="/nonexistent/server --port {port}")})
    async with Engine(config, paths, discover=False) as engine:
        with pytest.raises(LocalServerError, match="broken"):
            await run_turn(engine, "broken")


async def test_a_401_from_a_local_server_points_at_its_cmd_not_at_providers(paths: Paths) -> None:
    from muxtui.engine.errors import AuthError

    with FakeOpenAIServer(api_key="set-by-the-cmd") as server:
        async with Engine(Config(), paths, discover=False) as engine:
            engine.servers = StubServers(server)  # type: ignore[assignment]
            with pytest.raises(AuthError) as caught:
                await run_turn(engine, "little")
    message = str(caught.value)
    assert "--api-key" in message and "[local.little]" in message
    assert "api_key_env" not in message and "[providers" not in message
