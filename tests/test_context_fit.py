"""The pure parts of context fitting: the fit itself, the estimate, recognising rejections."""

from __future__ import annotations

import json

import pytest

from muxtui.engine.backends.base import Endpoint, HTTPFailure
from muxtui.engine.context import (
    ContextFitted,
    ContextTooSmallError,
    context_overflow,
    estimate_tokens,
    fit_messages,
    split_conversation,
)
from muxtui.engine.context.fit import FitResult, default_reply_budget, reply_budget
from muxtui.engine.context.overflow import ContextOverflow, tighter_budget
from muxtui.engine.events import ChatMessage
from muxtui.engine.retry import classify
from tests import fake_context


def words(message: ChatMessage) -> int:
    """A count the tests can reason about: one token per word, plus 2 for the template."""
    return len(message.content.split()) + 2


def conversation(turns: int, words_each: int = 10) -> list[ChatMessage]:
    """`turns` user/assistant pairs, each message naming its position (so each is unique)."""
    out = []
    for i in range(turns):
        out.append(ChatMessage("user", f"q{i} " + "w " * (words_each - 1)))
        out.append(ChatMessage("assistant", f"a{i} " + "w " * (words_each - 1)))
    return out


SYSTEM = (ChatMessage("system", "be brief"),)
NEW = ChatMessage("user", "the new question")


def test_keeps_system_and_the_newest_turns_that_fit() -> None:
    history = conversation(100)  # 200 messages of 12 counted tokens each
    fit = fit_messages(SYSTEM, history, NEW, window=300, reply_budget=60, count=words)
    # budget 240: system 4 + new 5 leave 231 = 19 messages of 12; 19 starts with an assistant
    # reply, so the kept history is the newest 18, from a user message on.
    kept = fit.messages[1:-1]
    assert fit.messages[0] == SYSTEM[0] and fit.messages[-1] == NEW
    assert kept == tuple(history[-18:])
    assert kept[0].role == "user" and kept[0].content.startswith("q91 ")
    assert fit.omitted == 182
    assert fit.used_tokens == 4 + 5 + 18 * 12 <= fit.budget == 240
    assert (fit.limit, fit.reply_budget) == (300, 60)


def test_never_splits_a_message_and_stops_at_the_first_that_does_not_fit() -> None:
    history = [
        ChatMessage("user", "old " * 5),
        ChatMessage("assistant", "huge " * 500),
        ChatMessage("user", "recent " * 5),
        ChatMessage("assistant", "reply " * 5),
    ]
    fit = fit_messages((), history, NEW, window=200, reply_budget=50, count=words)
    # The old short message would fit, but sending it without the huge one between would
    # leave a hole in the conversation: the kept history is a run of the newest.
    assert fit.messages == (history[2], history[3], NEW)
    assert fit.omitted == 2


def test_margin_and_per_request_overhead_shrink_the_room() -> None:
    history = conversation(50)
    plain = fit_messages((), history, NEW, window=500, reply_budget=100, count=words)
    careful = fit_messages(
        (), history, NEW, window=500, reply_budget=100, count=words, per_request=16, margin=0.1
    )
    assert careful.budget == int(500 * 0.9) - 100
    assert careful.used_tokens <= careful.budget
    assert careful.omitted > plain.omitted


def test_unknown_window_sends_everything() -> None:
    history = conversation(1000)
    fit = fit_messages(SYSTEM, history, NEW, window=None, reply_budget=0, count=words)
    assert fit.messages == (*SYSTEM, *history, NEW)
    assert (fit.omitted, fit.limit, fit.budget) == (0, None, None)
    assert fit.used_tokens == 4 + 2000 * 12 + 5


def test_a_long_new_message_squeezes_the_reply_then_fails_clearly() -> None:
    long_message = ChatMessage("user", "word " * 150)  # 152 tokens
    fit = fit_messages((), conversation(5), long_message, 200, reply_budget=100, count=words)
    assert fit.messages == (long_message,) and fit.omitted == 10
    assert fit.reply_budget == 200 - 152
    assert fit.capped_max_tokens(100) == 48 and fit.capped_max_tokens(None) is None

    too_long = ChatMessage("user", "word " * 190)
    with pytest.raises(ContextTooSmallError) as caught:
        fit_messages((), [], too_long, 200, reply_budget=100, count=words, model="tiny")
    assert str(caught.value) == (
        "the message needs about 192 tokens but tiny has a 200-token context; "
        "shorten it, or choose a model with a longer context"
    )
    assert caught.value.exit_code == 2

    big_system = (ChatMessage("system", "rule " * 190),)
    with pytest.raises(ContextTooSmallError, match=r"^the system prompt needs about 197 tokens"):
        fit_messages(big_system, [], NEW, 200, reply_budget=100, count=words, model="tiny")


def test_split_conversation() -> None:
    messages = [*SYSTEM, *conversation(2), NEW]
    assert split_conversation(messages) == (SYSTEM, tuple(conversation(2)), NEW)
    assert split_conversation([NEW]) == ((), (), NEW)
    only_system = [ChatMessage("system", "x")]
    assert split_conversation(only_system) == ((), (), only_system[0])


def test_reply_budget_defaults() -> None:
    assert default_reply_budget(2048) == 512
    assert default_reply_budget(131072) == 4096
    assert reply_budget(2048, 100) == 100
    assert reply_budget(2048, None) == 512
    assert reply_budget(None, None) == 0


def test_the_event_says_what_was_left_out_and_how_full() -> None:
    event = ContextFitted("gemma-3-270m", 6, 14, 1536, 2048, 512, "tokenizer", "server")
    assert event.notice == "14 earlier messages not sent: gemma-3-270m has 2,048 tokens"
    assert event.fill == 0.75
    one = ContextFitted("m", 2, 1, 10, 100, 10, "estimate", "config")
    assert one.notice == "1 earlier message not sent: m has 100 tokens"
    nothing = ContextFitted("m", 2, 0, 10, None, 0, "estimate", "unknown")
    assert (nothing.notice, nothing.fill) == ("", None)


def test_estimate_counts_pieces() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("Hello world") == 2  # a single space costs nothing
    assert estimate_tokens("extraordinarily") == 3  # runs of up to five letters
    assert estimate_tokens("3.14") == 4  # every digit and mark
    assert estimate_tokens("日本語") == 3  # each CJK character
    assert estimate_tokens("Привет") == 2  # runs of up to three other letters
    assert estimate_tokens("a\n\nb") == 3  # a newline run is one piece


# --- rejections ------------------------------------------------------------------------------

LLAMA_BODY = fake_context.context_exceeded(3009, 2048)
OPENAI_BODY = json.dumps(
    {
        "error": {
            "message": "This model's maximum context length is 8192 tokens. However, your "
            "messages resulted in 9000 tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
).encode()


def failure(status: int, body: bytes) -> HTTPFailure:
    return HTTPFailure(status, body, {}, "application/json")


@pytest.mark.parametrize(
    ("status", "body", "prompt", "limit"),
    [
        (400, LLAMA_BODY, 3009, 2048),
        (400, OPENAI_BODY, 9000, 8192),
        (
            400,
            b'{"error":{"message":"This endpoint\'s maximum context length is 1048576 tokens. '
            b'However, you requested about 1293741 tokens (1227853 of text input).","code":400}}',
            1293741,
            1048576,
        ),
        (
            400,
            b'{"object":"error","message":"This model\'s maximum context length is 4096 tokens. '
            b"However, you requested 5000 tokens (4000 in the messages, 1000 in the completion)."
            b'","type":"BadRequestError","code":400}',
            4000,
            4096,
        ),
        (400, b'{"error":"prompt is too long: 210000 tokens > 200000 maximum"}', 210000, 200000),
        (500, b'{"error":"the input length exceeds the context length"}', None, None),
    ],
    ids=["llama-server", "openai", "openrouter", "vllm", "anthropic-style", "ollama"],
)
def test_recognises_context_overflow(
    status: int, body: bytes, prompt: int | None, limit: int | None
) -> None:
    overflow = context_overflow(failure(status, body))
    assert overflow is not None
    assert (overflow.prompt_tokens, overflow.limit) == (prompt, limit)
    assert overflow.message and "\n" not in overflow.message


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, b'{"error":{"message":"max_tokens is too large: 10000","type":"invalid"}}'),
        (429, b'{"error":{"message":"Rate limit: too many tokens per min; context window"}}'),
        (404, b'{"error":{"message":"model not found"}}'),
        (400, b"<html>bad request</html>"),
    ],
)
def test_other_failures_are_not_overflows(status: int, body: bytes) -> None:
    assert context_overflow(failure(status, body)) is None


def test_recognises_the_overflow_in_a_classified_error() -> None:
    endpoint = Endpoint("local", "http://127.0.0.1:1/v1", local=True)
    error = classify(failure(400, LLAMA_BODY), endpoint).error
    overflow = context_overflow(error)
    assert overflow is not None and (overflow.prompt_tokens, overflow.limit) == (3009, 2048)


def test_tighter_budget_scales_by_the_servers_count() -> None:
    fit = FitResult((NEW,), 5, used_tokens=1800, limit=2048, budget=1843, reply_budget=205)
    # The server counted 2400 where the fit counted 1800: 0.75 of our units per real token.
    budget = tighter_budget(fit, ContextOverflow(2400, 2048, "x"))
    assert budget == int((2048 - 205) * 0.75 * 0.95)
    # Without counts: 75% of what was sent.
    assert tighter_budget(fit, ContextOverflow(None, None, "x")) == 1350
    # A limit smaller than the fit thought replaces it, with the reply's room in it.
    budget = tighter_budget(fit, ContextOverflow(1900, 1024, "x"), reply_budget=256)
    assert budget == int((1024 - 256) * (1800 / 1900) * 0.95)
