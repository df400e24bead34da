"""Context fitting against the loopback test server given a context limit (it rejects over-long
requests as llama-server does): windows learned, counts from /tokenize or the estimate, long
conversations sent trimmed, one tighter retry after a rejection."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from muxtui.engine.backends.base import ChatRequest, Endpoint, HTTPFailure, StreamEnd
from muxtui.engine.backends.ollama import OllamaBackend
from muxtui.engine.backends.openai import OpenAIBackend
from muxtui.engine.config import Config, LocalModelConfig, ModelConfig, ProviderConfig
from muxtui.engine.context import (
    ContextFitter,
    ContextTooSmallError,
    ContextWindow,
    ModelRef,
    TurnFit,
    context_overflow,
)
from muxtui.engine.events import ChatDelta, ChatMessage, ChatParams
from tests import fake_context
from tests.fake_server import Behaviour, Failure, FakeOpenAIServer
from tests.test_context_fit import conversation

MODEL = "fake-model"
SYSTEM = ChatMessage("system", "You are terse and kind.")


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(models=(MODEL,), behaviour=Behaviour(tokens=3)) as srv:
        yield srv


@pytest.fixture
def fitter() -> ContextFitter:
    """A fitter with no config: windows come from the server."""
    return ContextFitter(Config())


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as http:
        yield http


def ref_to(server: FakeOpenAIServer, name: str = MODEL, kind: str = "openai") -> ModelRef:
    base = server.base_url if kind == "openai" else server.root_url
    return ModelRef(name, kind, MODEL, Endpoint("test", base, local=kind == "openai"))


def as_dicts(messages: Any) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def chat_bodies(server: FakeOpenAIServer) -> list[dict[str, Any]]:
    """The chat requests the server received, in order."""
    paths = ("/v1/chat/completions", "/api/chat")
    return [r.json for r in server.requests if r.path in paths and isinstance(r.json, dict)]


async def send_turn(
    fitter: ContextFitter,
    ref: ModelRef,
    client: httpx.AsyncClient,
    messages: list[ChatMessage],
    max_tokens: int | None = None,
) -> tuple[list[TurnFit], str]:
    """What the turn pipeline does: fit, send, and after a context rejection refit once."""
    backend_type = OllamaBackend if ref.kind == "ollama" else OpenAIBackend
    backend = backend_type(client, ref.endpoint)
    turn = await fitter.fit(ref, messages, max_tokens, client)
    fits = [turn]
    while True:
        params = ChatParams(max_tokens=turn.max_tokens(max_tokens))
        request = ChatRequest(ref.model_id, turn.messages, params)
        try:
            parts = []
            async for item in backend.stream_chat(request):
                if isinstance(item, ChatDelta):
                    parts.append(item.text)
                else:
                    assert isinstance(item, StreamEnd)
            return fits, "".join(parts)
        except HTTPFailure as exc:
            overflow = context_overflow(exc)
            if overflow is None or len(fits) > 1:
                raise
            turn = fitter.refit(turn, overflow)
            fits.append(turn)


async def test_a_long_conversation_is_sent_trimmed_counted_by_the_servers_tokenizer(
    server: FakeOpenAIServer, client: httpx.AsyncClient, fitter: ContextFitter
) -> None:
    server.behaviour.context_limit = 400
    history = conversation(300)  # 600 messages of 12 tokens: ~18x the context
    new = ChatMessage("user", "and now the newest question")

    fits, reply = await send_turn(fitter, ref_to(server), client, [SYSTEM, *history, new])

    assert reply and len(fits) == 1
    assert (server.chat_requests, server.context_rejections) == (1, 0)
    (sent,) = [body["messages"] for body in chat_bodies(server)]
    kept = len(sent) - 2
    assert sent[0] == as_dicts([SYSTEM])[0] and sent[-1] == as_dicts([new])[0]
    assert sent[1:-1] == as_dicts(history[-kept:])  # the newest, in order
    assert sent[1]["role"] == "user" and 10 < kept < 40
    fit = fits[0]
    # The counts are the server's own: the templated prompt is exactly what the fit counted.
    assert fit.result.used_tokens == fake_context.templated_tokens(sent)
    assert fit.result.used_tokens <= 400 - fit.result.reply_budget
    event = fit.event
    assert (event.omitted, event.sent_messages) == (600 - kept, len(sent))
    assert event.notice == f"{600 - kept} earlier messages not sent: fake-model has 400 tokens"
    assert (event.counted_by, event.window_source, event.limit) == ("tokenizer", "server", 400)
    assert event.fill == fit.result.used_tokens / 400
    # Only the newest messages were tokenized (plus four calls measuring the template) ...
    first_turn_calls = server.tokenize_requests
    assert kept + 4 <= first_turn_calls <= kept + 4 + 16

    # ... and the next turn tokenizes only its two new messages.
    later = [SYSTEM, *history, new, ChatMessage("assistant", reply), ChatMessage("user", "more?")]
    fits, _ = await send_turn(fitter, ref_to(server), client, later)
    assert server.tokenize_requests == first_turn_calls + 2
    assert server.context_rejections == 0 and fits[0].event.omitted >= 600 - kept


async def test_counts_come_from_the_estimate_where_the_server_has_no_tokenize(
    server: FakeOpenAIServer, client: httpx.AsyncClient, fitter: ContextFitter
) -> None:
    server.behaviour.context_limit = 400
    server.behaviour.tokenize = False
    history = conversation(100)

    fits, _ = await send_turn(fitter, ref_to(server), client, [SYSTEM, *history, history[0]])

    assert server.tokenize_requests == 0 and server.context_rejections == 0
    fit = fits[0]
    assert (fit.event.counted_by, fit.event.window_source) == ("estimate", "server")
    (sent,) = [body["messages"] for body in chat_bodies(server)]
    assert sent[0]["role"] == "system" and fit.event.omitted > 0
    # The estimate errs high: it counted more than the server's tokenizer would.
    assert fit.result.used_tokens > fake_context.templated_tokens(sent)
    assert fit.result.used_tokens <= int(400 * 0.9) - fit.result.reply_budget


async def test_a_rejection_after_an_estimate_gets_one_tighter_retry(
    server: FakeOpenAIServer, client: httpx.AsyncClient, fitter: ContextFitter
) -> None:
    # The model list promises 3000 tokens; the server runs with 300 and does not say so.
    server.behaviour.context_limit = 300
    server.behaviour.props = server.behaviour.tokenize = False
    server.context_lengths[MODEL] = 3000
    history = conversation(100)
    new = ChatMessage("user", "the newest question")

    fits, reply = await send_turn(fitter, ref_to(server), client, [SYSTEM, *history, new])

    assert reply and len(fits) == 2
    assert (server.chat_requests, server.context_rejections) == (2, 1)
    first, retry = (body["messages"] for body in chat_bodies(server))
    assert fake_context.templated_tokens(first) >= 300
    assert fake_context.templated_tokens(retry) < 300
    assert retry[0]["role"] == "system" and retry[-1]["content"] == new.content
    kept = len(retry) - 2
    assert retry[1:-1] == as_dicts(history[-kept:]) and kept > 0
    assert fits[0].event.window_source == "model-list" and not fits[0].event.retried
    event = fits[1].event
    assert event.retried and (event.limit, event.window_source) == (300, "rejection")
    assert event.notice == f"{200 - kept} earlier messages not sent: fake-model has 300 tokens"

    # The window the server reported is kept: the next turn fits at once.
    fits, _ = await send_turn(fitter, ref_to(server), client, [SYSTEM, *history, new])
    assert len(fits) == 1 and server.context_rejections == 1
    assert fits[0].event.window_source == "rejection"


async def test_an_unknown_window_sends_everything_until_a_rejection_says_otherwise(
    server: FakeOpenAIServer, client: httpx.AsyncClient, fitter: ContextFitter
) -> None:
    server.behaviour.context_limit = 500
    server.behaviour.props = False
    history = conversation(60)

    fits, _ = await send_turn(fitter, ref_to(server), client, [*history, history[0]])

    assert fits[0].event.window_source == "unknown" and fits[0].event.omitted == 0
    assert fits[0].event.fill is None and fits[0].result.limit is None
    assert len(chat_bodies(server)[0]["messages"]) == 121
    assert server.context_rejections == 1 and fits[1].event.limit == 500
    assert fake_context.templated_tokens(chat_bodies(server)[1]["messages"]) < 500


async def test_an_openai_style_rejection_is_retried_tighter(
    server: FakeOpenAIServer, client: httpx.AsyncClient, fitter: ContextFitter
) -> None:
    server.context_lengths[MODEL] = 5000
    message = (
        "This model's maximum context length is 200 tokens. However, your messages resulted "
        "in 1400 tokens. Please reduce the length of the messages."
    )
    body = {"error": {"message": message, "type": "invalid_request_error", "param": "messages"}}
    body["error"]["code"] = "context_length_exceeded"
    server.fail_next(Failure(status=400, body=json.dumps(body).encode()))
    history = conversation(40)

    fits, reply = await send_turn(fitter, ref_to(server), client, [*history, history[0]])

    assert reply and server.chat_requests == 2
    first, retry = fits
    assert (retry.event.limit, retry.event.window_source) == (200, "rejection")
    # The fit counted `first.used_tokens` where the server said 1400: the retry scales for it.
    assert retry.result.used_tokens <= (200 - retry.result.reply_budget) * (
        first.result.used_tokens / 1400
    )
    assert len(chat_bodies(server)[1]["messages"]) < len(chat_bodies(server)[0]["messages"])


async def test_a_message_too_long_for_the_context_is_refused_before_sending(
    server: FakeOpenAIServer, client: httpx.AsyncClient, fitter: ContextFitter
) -> None:
    server.behaviour.context_limit = 100
    too_long = ChatMessage("user", "word " * 300)
    with pytest.raises(ContextTooSmallError) as caught:
        await send_turn(fitter, ref_to(server), client, [SYSTEM, too_long])
    assert str(caught.value).startswith("the message needs about ")
    assert "fake-model has a 100-token context; shorten it" in str(caught.value)
    assert server.chat_requests == 0


async def test_a_retry_that_cannot_leave_anything_out_fails_clearly(
    server: FakeOpenAIServer, client: httpx.AsyncClient, fitter: ContextFitter
) -> None:
    server.behaviour.context_limit = 50
    server.behaviour.props = False  # window unknown: the whole message goes out once
    with pytest.raises(ContextTooSmallError, match="has a 50-token context"):
        await send_turn(fitter, ref_to(server), client, [ChatMessage("user", "word " * 80)])
    assert (server.chat_requests, server.context_rejections) == (1, 1)


async def test_ollama_window_from_the_loaded_model_and_a_trimmed_turn(
    server: FakeOpenAIServer, client: httpx.AsyncClient, fitter: ContextFitter
) -> None:
    server.behaviour.context_limit = 300  # /api/ps reports it as the loaded context_length
    history = conversation(50)

    fits, reply = await send_turn(fitter, ref_to(server, kind="ollama"), client, [*history, SYSTEM])

    assert reply and server.context_rejections == 0
    assert (fits[0].event.window_source, fits[0].event.limit) == ("ollama", 300)
    (sent,) = [body["messages"] for body in chat_bodies(server)]
    assert fake_context.templated_tokens(sent) < 300 and 0 < fits[0].event.omitted < 100


async def test_window_sources(server: FakeOpenAIServer, client: httpx.AsyncClient) -> None:
    providers = {"p": ProviderConfig(base_url=server.base_url)}
    config = Config(
        providers=providers,
        models={"capped": ModelConfig(provider="p", id=MODEL, context=120)},
        local={"roomy": LocalModelConfig(path="x.gguf", context=90_000)},
    )
    fitter = ContextFitter(config)
    assert await fitter.window(ref_to(server), client) == ContextWindow(None, "unknown")

    server.context_lengths[MODEL] = 2048
    fitter = ContextFitter(config)
    assert await fitter.window(ref_to(server), client) == ContextWindow(2048, "model-list")
    assert await fitter.window(ref_to(server, "capped"), client) == ContextWindow(120, "config")

    server.behaviour.context_limit = 1000
    fitter = ContextFitter(config)
    expected = ContextWindow(1000, "server", tokenizer=True)
    assert await fitter.window(ref_to(server), client) == expected
    # A configured context only ever lowers what the server reports.
    assert await fitter.window(ref_to(server, "roomy"), client) == expected
    props_asked = sum(r.path == "/props" for r in server.requests)
    await fitter.window(ref_to(server), client)
    assert sum(r.path == "/props" for r in server.requests) == props_asked  # cached

    ollama = ref_to(server, kind="ollama")
    assert await fitter.window(ollama, client) == ContextWindow(1000, "ollama")
    server.behaviour.context_limit = None  # not loaded: /api/ps has no context_length
    server.ollama_num_ctx = 8192
    fitter = ContextFitter(config)
    assert await fitter.window(ollama, client) == ContextWindow(8192, "ollama-num_ctx")
    server.ollama_num_ctx = None
    assert await ContextFitter(config).window(ollama, client) == ContextWindow(
        2048, "ollama-default"
    )
    server.context_lengths[MODEL] = 131072  # trained for more than Ollama gives by default
    assert await ContextFitter(config).window(ollama, client) == ContextWindow(
        4096, "ollama-default"
    )


async def test_a_big_window_is_tokenized_over_several_turns(
    server: FakeOpenAIServer, client: httpx.AsyncClient, fitter: ContextFitter
) -> None:
    server.behaviour.context_limit = 100_000  # room for all 300 messages
    history = conversation(150)
    calls = []
    fits = []
    for _ in range(6):
        fits.append(await fitter.fit(ref_to(server), [SYSTEM, *history, history[0]], 50, client))
        calls.append(server.tokenize_requests)
    # Four calls measure the template; then at most TOKENIZE_PER_TURN (64) texts a turn, and
    # the estimate counts the rest until they are known.
    assert calls == [4 + 64, 4 + 128, 4 + 192, 4 + 256, 4 + 301, 4 + 301]
    assert [fit.event.counted_by for fit in fits] == ["estimate"] * 4 + ["tokenizer"] * 2
    assert all(fit.event.omitted == 0 for fit in fits)
    assert fits[-1].result.used_tokens == fake_context.templated_tokens(as_dicts(fits[-1].messages))
