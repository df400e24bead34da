"""`Engine.run_turn`: one recorded chat turn, its events, and how every ending is stored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from muxtui.engine.config import Config, LocalModelConfig, ModelConfig, ProviderConfig
from muxtui.engine.core import Engine
from muxtui.engine.errors import (
    BadRequestError,
    LocalServerError,
    TruncatedReplyError,
    UnknownModelError,
    UsageError,
)
from muxtui.engine.events import (
    ChatDelta,
    ChatFinished,
    ChatParams,
    ChatSettings,
    ChatStatus,
    ContextFitted,
    TurnStarted,
)
from muxtui.engine.paths import Paths
from muxtui.engine.retry import RetryPolicy
from tests.fake_server import Behaviour, Failure, FakeOpenAIServer

NO_RETRIES = RetryPolicy(retries=0)


def config_for(server: FakeOpenAIServer, **provider: object) -> Config:
    return Config(
        providers={"fake": ProviderConfig(base_url=server.base_url, **provider)},  # type: ignore[arg-type]
        models={"m": ModelConfig(provider="fake", id="fake-model")},
    )


@pytest.fixture
async def engine(fake_server: FakeOpenAIServer, paths: Paths) -> AsyncIterator[Engine]:
    async with Engine(
        config_for(fake_server), paths, discover=False, retry_policy=NO_RETRIES
    ) as started:
        yield started


async def events_of(engine: Engine, prompt: str = "hi there", **kwargs: object) -> list[object]:
    turn = engine.run_turn("m", prompt, **kwargs)  # type: ignore[arg-type]
    return [event async for event in turn if not isinstance(event, ContextFitted)]


async def test_a_new_turn_announces_its_conversation_then_streams_and_stores_it(
    engine: Engine,
) -> None:
    events = await events_of(engine)
    started = events[0]
    assert isinstance(started, TurnStarted)
    assert (started.title, started.model, started.new_conversation) == ("hi there", "m", True)
    assert events[1:-1] == [ChatDelta("tok ")] * 5
    finished = events[-1]
    assert isinstance(finished, ChatFinished) and finished.text == "tok " * 5
    assert started.conversation_id is not None
    [conversation] = await engine.list_conversations()
    assert (conversation.id, conversation.title, conversation.model) == (
        started.conversation_id,
        "hi there",
        "m",
    )
    user, reply = await engine.conversation_messages(conversation.id)
    assert (user.role, user.content, user.status) == ("user", "hi there", "complete")
    assert (reply.role, reply.content, reply.status) == ("assistant", "tok " * 5, "complete")
    assert (reply.model, reply.finish_reason) == ("m", "stop")
    assert reply.stats == finished.stats


async def test_continuing_sends_the_context_without_failed_replies_and_keeps_settings(
    engine: Engine, fake_server: FakeOpenAIServer
) -> None:
    settings = ChatSettings("be brief", temperature=0.4, max_tokens=3)
    first = await events_of(engine, "one", settings=settings)
    assert isinstance(first[0], TurnStarted)
    conversation_id = first[0].conversation_id
    fake_server.fail_next(Failure(status=400))
    with pytest.raises(BadRequestError):
        await events_of(engine, "two", conversation_id=conversation_id)
    events = await events_of(engine, "three", conversation_id=conversation_id)
    assert events[0] == TurnStarted(conversation_id, "one", "m", False)
    sent = fake_server.requests[-1].json
    assert sent is not None
    assert sent["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "tok tok tok "},
        {"role": "user", "content": "two"},
        {"role": "user", "content": "three"},
    ]
    assert (sent["temperature"], sent["max_tokens"]) == (0.4, 3)
    assert conversation_id is not None
    assert await engine.conversation_settings(conversation_id) == settings
    statuses = [m.status for m in await engine.conversation_messages(conversation_id)]
    assert statuses == ["complete", "complete", "complete", "error", "complete", "complete"]


async def test_params_set_by_the_caller_win_over_the_saved_settings(
    engine: Engine, fake_server: FakeOpenAIServer
) -> None:
    await events_of(engine, settings=ChatSettings(temperature=0.4, max_tokens=3))
    [conversation] = await engine.list_conversations()
    params = ChatParams(max_tokens=2, seed=7)
    await events_of(engine, "again", conversation_id=conversation.id, params=params)
    sent = fake_server.requests[-1].json
    assert sent is not None
    assert (sent["temperature"], sent["max_tokens"], sent["seed"]) == (0.4, 2, 7)


async def test_settings_saved_through_the_facade_survive_a_restart(
    fake_server: FakeOpenAIServer, paths: Paths
) -> None:
    async with Engine(config_for(fake_server), paths, discover=False) as engine:
        await events_of(engine)
        [conversation] = await engine.list_conversations()
        await engine.save_conversation_settings(conversation.id, ChatSettings("short", 1.0, 9))
    async with Engine(config_for(fake_server), paths, discover=False) as engine:
        assert await engine.conversation_settings(conversation.id) == ChatSettings("short", 1.0, 9)
        assert await engine.conversation_settings(12345) == ChatSettings()


@pytest.mark.parametrize("how", ["aclose", "cancel"])
async def test_a_stopped_turn_keeps_its_partial_reply(paths: Paths, how: str) -> None:
    with FakeOpenAIServer(behaviour=Behaviour(tokens=1000, token_gap=0.01)) as server:
        async with Engine(config_for(server), paths, discover=False) as engine:
            got_text = asyncio.Event()

            async def consume() -> None:
                turn = engine.run_turn("m", "go on")
                async for event in turn:
                    if isinstance(event, ChatDelta) and event.text:
                        got_text.set()
                        if how == "aclose":
                            await turn.aclose()
                            return

            task = asyncio.create_task(consume())
            await asyncio.wait_for(got_text.wait(), 10)
            if how == "cancel":
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            [conversation] = await engine.list_conversations()
            reply = (await engine.conversation_messages(conversation.id))[-1]
    assert reply.status == "stopped"
    assert reply.content.startswith("tok ") and len(reply.content) < 4000


async def test_a_truncated_stream_is_stored_as_truncated_and_raised(
    engine: Engine, fake_server: FakeOpenAIServer
) -> None:
    fake_server.fail_next(Failure(end_after_tokens=3))
    with pytest.raises(TruncatedReplyError) as caught:
        await events_of(engine)
    assert caught.value.partial_text == "tok " * 3
    [conversation] = await engine.list_conversations()
    reply = (await engine.conversation_messages(conversation.id))[-1]
    assert (reply.status, reply.content) == ("truncated", "tok " * 3)
    assert reply.error == str(caught.value)


async def test_an_unrecorded_turn_writes_nothing(
    engine: Engine, fake_server: FakeOpenAIServer
) -> None:
    events = await events_of(engine, record=False)
    assert events[0] == TurnStarted(None, "hi there", "m", True)
    assert isinstance(events[-1], ChatFinished)
    assert await engine.list_conversations() == []


async def test_nothing_is_recorded_when_the_turn_cannot_start(
    engine: Engine, fake_server: FakeOpenAIServer
) -> None:
    with pytest.raises(UnknownModelError):
        await anext(engine.run_turn("nope", "hi"))
    with pytest.raises(UsageError, match="conversation 41 does not exist"):
        await anext(engine.run_turn("m", "hi", conversation_id=41))
    with pytest.raises(UsageError, match="the prompt is empty"):
        await anext(engine.run_turn("m", " \n "))
    assert await engine.list_conversations() == []
    assert fake_server.chat_requests == 0


async def test_a_local_model_file_mistake_is_found_before_recording(
    paths: Paths, tmp_path: Path
) -> None:
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_text("not a model")
    config = Config(local={"broken": LocalModelConfig(path=str(not_gguf))})
    async with Engine(config, paths, discover=False) as engine:
        with pytest.raises(LocalServerError, match="is not a GGUF file"):
            await anext(engine.run_turn("broken", "hi"))
        assert await engine.list_conversations() == []


async def test_known_secrets_never_reach_the_history_even_in_reply_text(paths: Paths) -> None:
    secret = "sk-echoed-by-a-chatty-model"
    behaviour = Behaviour(tokens=2, token_text=f"key {secret} ")
    with FakeOpenAIServer(behaviour=behaviour) as server:
        async with Engine(config_for(server, api_key=secret), paths, discover=False) as engine:
            events = await events_of(engine, f"is {secret} mine?")
            assert isinstance(events[-1], ChatFinished)
            [conversation] = await engine.list_conversations()
            stored = await engine.conversation_messages(conversation.id)
    assert [m.content for m in stored] == ["is **** mine?", "key **** key **** "]
    assert conversation.title == "is **** mine?"
    data = b"".join(p.read_bytes() for p in paths.data_dir.iterdir() if p.is_file())
    assert secret.encode() not in data


async def test_conversation_operations_through_the_facade(engine: Engine) -> None:
    await events_of(engine, "first about tea")
    await events_of(engine, "second about coffee")
    coffee, tea = await engine.list_conversations()
    assert [c.id for c in await engine.search_conversations("TEA")] == [tea.id]
    await engine.rename_conversation(tea.id, "Tea time")
    conversation = await engine.get_conversation(tea.id)
    assert conversation is not None and conversation.title == "Tea time"
    await engine.delete_conversation(coffee.id)
    assert [c.id for c in await engine.list_conversations()] == [tea.id]
    assert await engine.conversation_messages(coffee.id) == []


async def test_statuses_of_a_turn_pass_through(
    engine: Engine, fake_server: FakeOpenAIServer
) -> None:
    engine.retry_policy = RetryPolicy(retries=1, base_delay=0.0)
    fake_server.fail_next(Failure(status=503))
    events = await events_of(engine)
    assert isinstance(events[0], TurnStarted)
    assert isinstance(events[1], ChatStatus) and "retrying" in events[1].message
    assert isinstance(events[-1], ChatFinished)
