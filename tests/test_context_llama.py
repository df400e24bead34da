"""Context fitting against the real bundled llama-server and Gemma: the window learned from
/props, counts from its /tokenize matching its own usage, its rejection recognised and retried."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from muxtui.engine.backends.base import ChatRequest, Endpoint, HTTPFailure
from muxtui.engine.backends.openai import OpenAIBackend
from muxtui.engine.config import CacheConfig, Config, LocalModelConfig
from muxtui.engine.context import (
    ContextFitter,
    ContextWindow,
    ModelRef,
    context_overflow,
    estimate_tokens,
)
from muxtui.engine.context.tokens import ServerTokenizer, TemplateOverhead
from muxtui.engine.events import ChatMessage, ChatParams
from muxtui.engine.local.manager import ServerManager
from muxtui.engine.paths import Paths
from tests.test_servers import Recorder

pytestmark = pytest.mark.llama

NAME = "gemma-ctx"
N_CTX = 1024
# `--no-jinja`: with llama-server's default Jinja engine, `--chat-template gemma` is taken as
# a template whose text is "gemma", and the model never sees the conversation.
CMD = "{llama} -m {path} --host {host} --port {port} --no-jinja --chat-template gemma -c %d"
SAMPLES = {
    "prose": "When a person continues a long conversation, the engine keeps the system prompt "
    "and as many of the newest turns as fit, and says what it left out. " * 4,
    "code": "def fit(history, budget):\n    for message in reversed(history):\n"
    "        if used + count(message) > budget:\n            break\n" * 4,
    "markdown": "## Heading\n\n- item one\n- item **two**\n\n| a | b |\n|---|---|\n| 1 | 2 |\n" * 4,
    "cjk": "上下文窗口以令牌计量，而不是字符。日本語のテキストも試してみます。" * 4,
    "cyrillic": "Контекстное окно измеряется в токенах, а не в символах. " * 4,
    "german": "Die Kontextfenstergröße wird in Token gemessen, nicht in Zeichen. " * 4,
    "emoji": "🎉🚀✨ mixed text with emoji 😀 and symbols ©®™ " * 4,
}


@pytest.fixture
async def gemma(
    gemma_file: Path,
    paths: Paths,
) -> AsyncIterator[tuple[ModelRef, httpx.AsyncClient]]:
    """A warm Gemma server with a 1024-token context, and a client for it."""
    local = LocalModelConfig(cmd=CMD % N_CTX, path=str(gemma_file), ttl=0)
    config = Config(local={NAME: local}, cache=CacheConfig(stall_timeout=60, stop_grace=5))
    manager = ServerManager(config, paths, Recorder())
    try:
        async with (
            manager.acquire(NAME) as endpoint,
            httpx.AsyncClient(timeout=120) as client,
        ):
            target = Endpoint("local", endpoint.base_url.rstrip("/"), local=True)
            yield ModelRef(NAME, "openai", endpoint.model_id, target), client
    finally:
        await manager.aclose()


def turns(pairs: int, words: int) -> list[ChatMessage]:
    """Chat turns; no trailing spaces, which Gemma's template trims and the count would not."""
    out = []
    for i in range(pairs):
        asked = " ".join([f"Question {i}:", *["tell me about the sea"] * words])
        answered = " ".join([f"Answer {i}:", *["the sea is wide and deep."] * words])
        out += [ChatMessage("user", asked), ChatMessage("assistant", answered)]
    return out


async def prompt_tokens(ref: ModelRef, client: httpx.AsyncClient, messages: object) -> int:
    """Send `messages` for one token; the prompt tokens the server reports."""
    backend = OpenAIBackend(client, ref.endpoint)
    request = ChatRequest(ref.model_id, tuple(messages), ChatParams(max_tokens=1))  # type: ignore[arg-type]
    completion = await backend.complete(request)
    assert completion.end.prompt_tokens is not None
    return completion.end.prompt_tokens


async def test_gemma_window_counts_rejection_and_estimate(
    gemma: tuple[ModelRef, httpx.AsyncClient],
) -> None:
    ref, client = gemma
    fitter = ContextFitter(Config())
    assert await fitter.window(ref, client) == ContextWindow(N_CTX, "server", tokenizer=True)

    system = ChatMessage("system", "You answer in one short sentence.")
    history = turns(30, 6)
    new = ChatMessage("user", "What did we talk about?")
    turn = await fitter.fit(ref, [system, *history, new], 8, client)
    # Gemma's template, measured: <start_of_turn>role\n ... <end_of_turn>\n is 5 tokens a
    # message; <bos> and <start_of_turn>model\n are 4 more.
    overhead = fitter.counts(NAME).overhead
    assert overhead == TemplateOverhead(5, 4, measured=True)
    assert turn.event.counted_by == "tokenizer" and turn.event.omitted > 0
    assert turn.messages[0] == system and turn.messages[-1] == new
    assert turn.messages[1:-1] == tuple(history[-(len(turn.messages) - 2) :])

    # The fit's count matches what the server itself counted, within the template overhead
    # (Gemma folds the system prompt into the first user turn: fewer tokens than a message).
    sent = await prompt_tokens(ref, client, turn.messages)
    assert sent <= N_CTX - 8
    assert 0 <= turn.result.used_tokens - sent <= overhead.per_message
    for messages in ([new], [*history[-4:], new], [system, *history[-6:], new]):
        counted = (await fitter.fit(ref, messages, 1, client)).result.used_tokens
        assert 0 <= counted - await prompt_tokens(ref, client, messages) <= overhead.per_message

    # The whole conversation, unfitted, is refused as llama-server refuses it; the refit goes.
    backend = OpenAIBackend(client, ref.endpoint)
    everything = ChatRequest(ref.model_id, (system, *history, new), ChatParams(max_tokens=8))
    with pytest.raises(HTTPFailure) as refused:
        await backend.complete(everything)
    overflow = context_overflow(refused.value)
    assert overflow is not None and overflow.limit == N_CTX
    assert overflow.prompt_tokens is not None and overflow.prompt_tokens >= N_CTX
    unfitted = await fitter.fit(ref, [system, *history, new], 8, client)
    retry = fitter.refit(unfitted, overflow)
    assert retry.event.retried and retry.result.used_tokens < unfitted.result.used_tokens
    params = ChatParams(max_tokens=retry.max_tokens(8))
    reply = await backend.complete(ChatRequest(ref.model_id, retry.messages, params))
    assert reply.end.prompt_tokens is not None and reply.end.prompt_tokens < N_CTX

    # Where there is no tokenizer, the estimate stands in: against Gemma's it errs high.
    tokenizer = ServerTokenizer(client, ref.endpoint.base_url.removesuffix("/v1"))
    for kind, text in SAMPLES.items():
        real = await tokenizer.tokenize(text)
        # 10% under at worst: what ESTIMATE_MARGIN leaves unused covers it.
        assert estimate_tokens(text) >= 0.9 * real, kind
