"""The response cache in the engine: chat turns, forward_chat, batch runs, model identities."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from muxtui.engine.batch.output import OutputPaths
from muxtui.engine.batch.runner import BatchSpec
from muxtui.engine.config import Config, LocalModelConfig, ResponseCacheConfig
from muxtui.engine.core import Engine
from muxtui.engine.errors import MuxtuiError
from muxtui.engine.events import (
    ChatDelta,
    ChatFinished,
    ChatMessage,
    ChatParams,
    ResponseCacheChanged,
    ServerState,
)
from muxtui.engine.paths import Paths
from muxtui.engine.retry import RetryPolicy
from tests.batch_support import FAST, batch_config, records, write_jsonl
from tests.fake_server import Failure, FakeOpenAIServer
from tests.test_tui_support import FAKE_SERVER_SCRIPT
from tests.valkey_support import ValkeyServer, valkey  # noqa: F401  (the fixture)

Engines = Callable[[Config, RetryPolicy], Engine]
HI = [ChatMessage("user", "hi there")]
ZERO = ChatParams(temperature=0)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    started = FakeOpenAIServer().start()
    try:
        yield started
    finally:
        started.stop()


def cache_config(base_url: str, **cache: object) -> Config:
    config = batch_config(base_url)
    config.response_cache = ResponseCacheConfig(**cache)  # type: ignore[arg-type]
    return config


async def chat_events(engine: Engine, params: ChatParams, model: str = "m") -> list[object]:
    return [
        e async for e in engine.chat(model, HI, params) if isinstance(e, ChatDelta | ChatFinished)
    ]


def finished_of(events: list[object]) -> ChatFinished:
    last = events[-1]
    assert isinstance(last, ChatFinished)
    return last


# --- chat --------------------------------------------------------------------------------------


async def test_a_repeated_temperature_0_turn_is_served_from_the_cache(
    server: FakeOpenAIServer, engines: Engines
) -> None:
    engine = engines(cache_config(server.base_url), FAST)
    first = finished_of(await chat_events(engine, ZERO))
    assert not first.cached and server.chat_requests == 1
    again = await chat_events(engine, ZERO)
    second = finished_of(again)
    assert server.chat_requests == 1  # the server was not asked
    assert second.cached and second.text == first.text == "tok " * 5
    assert "".join(e.text for e in again if isinstance(e, ChatDelta)) == second.text
    assert second.finish_reason == "stop"
    assert (second.stats.prompt_tokens, second.stats.completion_tokens) == (
        first.stats.prompt_tokens,
        first.stats.completion_tokens,
    )
    recorded = engine.run_turn("m", "hi there", params=ZERO)
    turn_end = [e async for e in recorded][-1]
    assert isinstance(turn_end, ChatFinished) and turn_end.cached
    assert server.chat_requests == 1
    stored = await engine.conversation_messages(1)
    assert [m.status for m in stored][-1] == "complete"
    from muxtui.tui.panes.chat.message_view import stats_line

    assert stats_line(second.stats).endswith(" · cached")
    assert "cached" not in stats_line(first.stats)


async def test_other_turns_are_not_cached(server: FakeOpenAIServer, engines: Engines) -> None:
    engine = engines(cache_config(server.base_url), FAST)
    warm = ChatParams(temperature=0.7)
    for _ in range(2):
        assert not finished_of(await chat_events(engine, warm)).cached
    assert server.chat_requests == 2
    seeded = ChatParams(temperature=0.7, seed=5)
    await chat_events(engine, seeded)
    assert finished_of(await chat_events(engine, seeded)).cached
    assert server.chat_requests == 3
    await chat_events(engine, ChatParams(temperature=0, max_tokens=3))  # a changed body misses
    assert server.chat_requests == 4


async def test_a_truncated_reply_is_not_stored(server: FakeOpenAIServer, engines: Engines) -> None:
    engine = engines(cache_config(server.base_url), FAST)
    server.fail_next(Failure(end_after_tokens=2))
    with pytest.raises(MuxtuiError):
        await chat_events(engine, ZERO)
    assert not finished_of(await chat_events(engine, ZERO)).cached
    assert finished_of(await chat_events(engine, ZERO)).cached
    assert server.chat_requests == 2


async def test_cache_off_sends_every_turn(server: FakeOpenAIServer, engines: Engines) -> None:
    engine = engines(cache_config(server.base_url, backend="off"), FAST)
    for _ in range(2):
        await chat_events(engine, ZERO)
    assert server.chat_requests == 2
    assert engine.response_cache.backend == "off"


async def test_a_cached_local_turn_starts_no_server(
    paths: Paths, tmp_path: Path, engines: Engines
) -> None:
    model_file = tmp_path / "tiny.gguf"
    model_file.write_bytes(b"GGUF" + os.urandom(3 * 2**20))
    cmd = f"{sys.executable} {FAKE_SERVER_SCRIPT} --port {{port}}"
    config = Config(local={"tiny": LocalModelConfig(cmd=cmd, path=str(model_file), ttl=0)})
    first_engine = engines(config, FAST)
    identity = await first_engine.model_identity("tiny")
    assert identity.startswith("gguf:") and identity == await first_engine.model_identity("tiny")
    assert not finished_of(await chat_events(first_engine, ZERO, "tiny")).cached
    await first_engine.aclose()
    second_engine = engines(config, FAST)  # another process's view: the SQLite file only
    assert finished_of(await chat_events(second_engine, ZERO, "tiny")).cached
    states = {e.name: e.state for e in second_engine.list_models()}
    assert states["tiny"] == ServerState.COLD
    with model_file.open("r+b") as handle:  # another model file: another identity, a miss
        handle.seek(2 * 2**20)
        handle.write(b"changed")
    os.utime(model_file, ns=(1, 1))
    assert await second_engine.model_identity("tiny") != identity


async def test_remote_identity_is_provider_id_and_host(
    server: FakeOpenAIServer, engines: Engines
) -> None:
    engine = engines(cache_config(server.base_url), FAST)
    assert await engine.model_identity("m") == "fake:fake-model@127.0.0.1"


# --- forward_chat and batch --------------------------------------------------------------------


async def test_forward_chat_hits_misses_and_no_store(
    server: FakeOpenAIServer, engines: Engines
) -> None:
    engine = engines(cache_config(server.base_url), FAST)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    first = await engine.forward_chat("m", body)
    second = await engine.forward_chat("m", {**body, "stream": False, "user": "u"})
    assert (first.cached, second.cached, server.chat_requests) == (False, True, 1)
    assert second.parsed == first.parsed and json.loads(second.content) == first.parsed
    assert not (await engine.forward_chat("m", body, "no-store")).cached
    assert not (await engine.forward_chat("m", {**body, "max_tokens": 2})).cached
    assert server.chat_requests == 3
    warm = {**body, "temperature": 0.9}
    await engine.forward_chat("m", warm, "force")
    assert (await engine.forward_chat("m", warm, "force")).cached
    assert not (await engine.forward_chat("m", warm)).cached
    assert server.chat_requests == 5


async def test_batch_second_identical_item_is_not_sent(
    server: FakeOpenAIServer, engines: Engines, tmp_path: Path
) -> None:
    same = {"messages": [{"role": "user", "content": "same question"}], "temperature": 0}
    rows = [
        {"custom_id": "a", **same},
        {"custom_id": "b", **same},
        {"custom_id": "c", "prompt": "warm question", "temperature": 0.5},
    ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    engine = engines(cache_config(server.base_url), FAST)
    summary = await engine.run_batch(BatchSpec(source, model="m", concurrency=1))
    assert summary.exit_status == 0
    results = {r["custom_id"]: r for r in records(OutputPaths.beside(summary.output).results)}
    assert set(results) == {"a", "b", "c"}
    assert server.chat_requests == 2  # "b" came from the cache
    body_a, body_b = results["a"]["response"]["body"], results["b"]["response"]["body"]
    assert body_a == body_b


# --- shared Redis ------------------------------------------------------------------------------


async def test_two_engines_share_hits_through_valkey(
    server: FakeOpenAIServer,
    engines: Engines,
    valkey: ValkeyServer,  # noqa: F811
) -> None:
    config = cache_config(server.base_url, backend="redis", url=valkey.url)
    one, two = engines(config, FAST), engines(config, FAST)
    body = {"messages": [{"role": "user", "content": "shared"}], "seed": 7}
    assert not (await one.forward_chat("m", body)).cached
    assert (await two.forward_chat("m", body)).cached
    assert finished_of(await chat_events(one, ZERO)).cached is False
    assert finished_of(await chat_events(two, ZERO)).cached
    assert server.chat_requests == 2
    assert two.response_cache.backend == "redis" and two.response_cache.healthy


async def test_requests_go_on_when_valkey_dies(
    server: FakeOpenAIServer,
    engines: Engines,
    valkey: ValkeyServer,  # noqa: F811
) -> None:
    engine = engines(cache_config(server.base_url, backend="redis", url=valkey.url), FAST)
    events: list[object] = []
    engine.add_listener(events.append)
    body = {"messages": [{"role": "user", "content": "q"}], "temperature": 0}
    await engine.forward_chat("m", body)
    assert not [e for e in events if isinstance(e, ResponseCacheChanged)]
    valkey.stop()
    other = {**body, "messages": [{"role": "user", "content": "another"}]}
    reply = await engine.forward_chat("m", other)
    assert not reply.cached and reply.parsed["choices"][0]["message"]["content"]
    assert finished_of(await chat_events(engine, ChatParams(temperature=0, max_tokens=4))).text
    assert not engine.response_cache.healthy
    # The app and serve's metrics are told once: the cache is down, with where (no password).
    changes = [e for e in events if isinstance(e, ResponseCacheChanged)]
    assert [(c.backend, c.healthy) for c in changes] == [("redis", False)]
    host_port = valkey.url.split("//")[1].split("/")[0]
    assert host_port in changes[0].message and "cannot be used" in changes[0].message
