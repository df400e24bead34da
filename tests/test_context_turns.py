"""The turn pipeline fits every conversation to the model's context window, end to end."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from muxtui.engine.config import Config, ModelConfig, ProviderConfig
from muxtui.engine.context.tokens import TOKENIZE_PER_TURN
from muxtui.engine.core import Engine
from muxtui.engine.events import ChatFinished, ChatSettings, ContextFitted, TurnStarted
from muxtui.engine.paths import Paths
from tests import fake_context
from tests.fake_server import FakeOpenAIServer
from tests.long_history import add_conversation

SYSTEM = "You are terse."


@pytest.fixture
def server() -> AsyncIterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as running:
        running.behaviour.context_limit = 300
        yield running


def _config(server: FakeOpenAIServer) -> Config:
    return Config(
        providers={"box": ProviderConfig(base_url=server.base_url)},
        models={"m": ModelConfig(provider="box", id="fake-model")},
    )


async def _turn(engine: Engine, prompt: str, conversation_id: int | None) -> list[object]:
    settings = ChatSettings(system_prompt=SYSTEM)
    turn = engine.run_turn("m", prompt, conversation_id=conversation_id, settings=settings)
    return [event async for event in turn]


def _chat_bodies(server: FakeOpenAIServer) -> list[dict[str, object]]:
    return [r.json for r in server.requests if r.path.endswith("/chat/completions")]  # type: ignore[misc]


async def test_a_long_conversation_goes_out_trimmed_and_the_omission_is_reported(
    server: FakeOpenAIServer, paths: Paths
) -> None:
    async with Engine(_config(server), paths, discover=False) as engine:
        conversation_id = None
        for number in range(40):  # 80 stored messages, far more than 300 tokens
            events = await _turn(
                engine, f"question number {number} about the weather", conversation_id
            )
            started = events[0]
            assert isinstance(started, TurnStarted)
            conversation_id = started.conversation_id
            assert isinstance(events[-1], ChatFinished)
        stored = await engine.conversation_messages(conversation_id or 0)
    assert len(stored) == 80  # the history keeps everything; only what is sent is trimmed
    assert server.context_rejections == 0
    last = _chat_bodies(server)[-1]["messages"]
    assert isinstance(last, list)
    assert last[0] == {"role": "system", "content": SYSTEM}
    assert last[-1] == {"role": "user", "content": "question number 39 about the weather"}
    assert 3 < len(last) < 79  # newest turns only
    assert fake_context.templated_tokens(last) < 300
    fitted = [e for e in events if isinstance(e, ContextFitted)]
    assert len(fitted) == 1 and fitted[0].limit == 300
    omitted = 79 - (len(last) - 1)
    assert fitted[0].notice == f"{omitted} earlier messages not sent: m has 300 tokens"


async def test_a_rejection_without_a_known_window_is_retried_once_tighter(
    server: FakeOpenAIServer, paths: Paths
) -> None:
    server.behaviour.props = server.behaviour.tokenize = False  # like a remote OpenAI server
    async with Engine(_config(server), paths, discover=False) as engine:
        long_history = None
        for number in range(30):
            events = await _turn(engine, f"tell me about number {number} please", long_history)
            started = events[0]
            assert isinstance(started, TurnStarted)
            long_history = started.conversation_id
            assert isinstance(events[-1], ChatFinished), events[-1]
    assert server.context_rejections == 1  # learned once, never again
    retried = [e for e in events if isinstance(e, ContextFitted)]
    assert retried and all(e.limit is not None for e in retried)


async def test_a_second_turn_in_a_long_conversation_tokenizes_only_its_new_messages(
    server: FakeOpenAIServer, paths: Paths
) -> None:
    server.behaviour.context_limit = 4096  # room for ~300 of these messages: > 64 a turn
    async with Engine(_config(server), paths, discover=False) as engine:
        conversation_id = add_conversation(
            paths.history_db, "long", 600, lambda i: f"message {i} about the weather today"
        )
        first = await _turn(engine, "the first new question", conversation_id)
        await engine.context.idle()  # the counting after its reply, in the background
        after_first = server.tokenize_requests
        fitted = [e for e in first if isinstance(e, ContextFitted)]
        assert fitted[0].counted_by == "estimate"  # more than one turn's calls to count it all
        assert after_first > TOKENIZE_PER_TURN + 4  # ... finished after the reply

        calls = []
        for number in range(3):
            server.behaviour.token_text = f"reply{number} "  # a reply not counted before
            before = server.tokenize_requests
            events = await _turn(engine, f"new question {number}", conversation_id)
            await engine.context.idle()
            calls.append(server.tokenize_requests - before)
            fitted = [e for e in events if isinstance(e, ContextFitted)]
            assert fitted[0].counted_by == "tokenizer" and fitted[0].omitted > 0
            assert isinstance(events[-1], ChatFinished)
    # Each turn: its prompt before sending, its reply after; nothing older again.
    assert calls == [2, 2, 2]
    assert server.context_rejections == 0


async def test_counting_ahead_leaves_the_first_turn_only_its_new_message(
    server: FakeOpenAIServer, paths: Paths
) -> None:
    server.behaviour.context_limit = 4096
    async with Engine(_config(server), paths, discover=False) as engine:
        conversation_id = add_conversation(
            paths.history_db, "long", 600, lambda i: f"message {i} about the weather today"
        )
        await engine.warm_context("m", conversation_id)  # as the chat does when it opens one
        await engine.context.idle()
        counted = server.tokenize_requests
        assert counted > TOKENIZE_PER_TURN + 4  # more than a turn may count before sending

        turn = engine.run_turn("m", "the first new question", conversation_id=conversation_id)
        events = [event async for event in turn]
        fitted = [e for e in events if isinstance(e, ContextFitted)]
        assert fitted[0].counted_by == "tokenizer" and fitted[0].omitted > 0
        assert isinstance(events[-1], ChatFinished)
        chats = [r for r in server.requests if r.path.endswith("/chat/completions")]
        before_sending = [
            r for r in server.requests[: server.requests.index(chats[-1])] if r.path == "/tokenize"
        ]
        assert len(before_sending) == counted + 1  # its prompt
        await engine.warm_context("nobody", conversation_id)  # unknown: nothing, no error
