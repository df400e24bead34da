"""Pooling, retries, typed errors and cancellation, against the real loopback test server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path

import pytest

from muxtui.engine.config import Config, ModelConfig, NetworkConfig, ProviderConfig
from muxtui.engine.core import Engine
from muxtui.engine.errors import (
    AuthError,
    BadRequestError,
    RateLimitedError,
    ServerError,
    StreamInterruptedError,
    UnreachableError,
)
from muxtui.engine.events import ChatDelta, ChatFinished, ChatMessage, ChatStatus, ContextFitted
from muxtui.engine.paths import Paths
from muxtui.engine.retry import EndpointHealth, RetryPolicy, parse_retry_after
from tests.fake_server import Behaviour, Failure, FakeOpenAIServer

HI = [ChatMessage("user", "hi")]
FAST = RetryPolicy(retries=3, base_delay=0.01, max_delay=0.05)


def make_config(
    base_url: str | list[str], *, api_key: str = "", api_key_env: str = "", **network: object
) -> Config:
    provider = ProviderConfig(base_url=base_url, api_key=api_key, api_key_env=api_key_env)
    return Config(
        providers={"fake": provider},
        models={"m": ModelConfig(provider="fake", id="fake-model")},
        network=NetworkConfig(**network),  # type: ignore[arg-type]
    )


@pytest.fixture
def engine_for(engines: Callable[[Config, RetryPolicy], Engine]) -> Callable[..., Engine]:
    """Engines with fast retries unless the test gives its own policy."""
    return lambda config, policy=FAST: engines(config, policy)


async def reply(engine: Engine, model: str = "m") -> tuple[str, list[object]]:
    events = [e async for e in engine.chat(model, HI) if not isinstance(e, ContextFitted)]
    finished = events[-1]
    assert isinstance(finished, ChatFinished)
    return finished.text, events


# --- pooling ---------------------------------------------------------------------------------


async def test_100_sequential_requests_reuse_one_connection(
    fake_server: FakeOpenAIServer, engine_for: Callable[..., Engine]
) -> None:
    engine = engine_for(make_config(fake_server.base_url))
    for _ in range(100):
        text, _ = await reply(engine)
        assert text == "tok " * 5
    assert fake_server.chat_requests == 100
    assert fake_server.connections_accepted == 1


async def test_50_concurrent_requests_never_exceed_the_connection_limit(
    fake_server: FakeOpenAIServer, engine_for: Callable[..., Engine]
) -> None:
    fake_server.behaviour.token_gap = 0.002
    engine = engine_for(make_config(fake_server.base_url, max_connections=10))
    texts = await asyncio.gather(*(reply(engine) for _ in range(50)))
    assert [text for text, _ in texts] == ["tok " * 5] * 50
    assert fake_server.chat_requests == 50
    assert fake_server.connections_accepted <= 10
    assert fake_server.max_in_flight <= 10
    assert fake_server.max_in_flight > 1  # they did run side by side


async def test_non_streaming_requests_share_the_pool_too(
    fake_server: FakeOpenAIServer, engine_for: Callable[..., Engine]
) -> None:
    from muxtui.engine.events import ChatParams

    engine = engine_for(make_config(fake_server.base_url))
    for _ in range(5):
        events = [e async for e in engine.chat("m", HI, ChatParams(stream=False))]
        assert isinstance(events[-1], ChatFinished)
        assert events[-1].text == "tok " * 5
    assert fake_server.connections_accepted == 1
    chats = [r for r in fake_server.requests if r.path.endswith("/chat/completions")]
    assert len(chats) == 5 and all(r.json and r.json["stream"] is False for r in chats)


async def test_aclose_closes_pooled_connections(
    fake_server: FakeOpenAIServer, paths: Paths
) -> None:
    engine = Engine(make_config(fake_server.base_url), paths, discover=False)
    await engine.start()
    await reply(engine)
    assert fake_server.connections_open == 1
    await engine.aclose()
    await fake_server.wait_for(lambda: fake_server.connections_open == 0)


# --- retries ---------------------------------------------------------------------------------


async def test_429_is_retried_after_the_stated_delay(
    fake_server: FakeOpenAIServer, engine_for: Callable[..., Engine]
) -> None:
    engine = engine_for(make_config(fake_server.base_url))
    fake_server.fail_next(Failure(status=429, retry_after=1.0))
    started = time.monotonic()
    text, events = await reply(engine)
    elapsed = time.monotonic() - started
    assert text == "tok " * 5
    assert fake_server.chat_requests == 2
    assert elapsed >= 1.0
    statuses = [e for e in events if isinstance(e, ChatStatus)]
    assert len(statuses) == 1 and "429" in statuses[0].message


async def test_503_twice_then_200_succeeds(
    fake_server: FakeOpenAIServer, engine_for: Callable[..., Engine]
) -> None:
    engine = engine_for(make_config(fake_server.base_url))
    fake_server.fail_next(Failure(status=503), Failure(status=503))
    text, events = await reply(engine)
    assert text == "tok " * 5
    assert fake_server.chat_requests == 3
    assert [type(e) for e in events[:2]] == [ChatStatus, ChatStatus]


async def test_retries_are_bounded(
    fake_server: FakeOpenAIServer, engine_for: Callable[..., Engine]
) -> None:
    engine = engine_for(make_config(fake_server.base_url), RetryPolicy(retries=2, base_delay=0))
    fake_server.fail_next(*[Failure(status=500)] * 5)
    with pytest.raises(ServerError, match=r"^fake: server error \(500\)"):
        await reply(engine)
    assert fake_server.chat_requests == 3


async def test_rate_limit_after_every_retry_is_a_rate_limited_error(
    fake_server: FakeOpenAIServer, engine_for: Callable[..., Engine]
) -> None:
    engine = engine_for(make_config(fake_server.base_url), RetryPolicy(retries=1, base_delay=0))
    fake_server.fail_next(Failure(status=429), Failure(status=429))
    with pytest.raises(RateLimitedError, match="rate limited"):
        await reply(engine)
    assert fake_server.chat_requests == 2


async def test_a_retry_after_beyond_the_limit_fails_at_once(
    fake_server: FakeOpenAIServer, engine_for: Callable[..., Engine]
) -> None:
    engine = engine_for(make_config(fake_server.base_url))
    fake_server.fail_next(Failure(status=429, retry_after=3600))
    with pytest.raises(RateLimitedError, match="wait 3600 s"):
        await reply(engine)
    assert fake_server.chat_requests == 1


async def test_a_503_asking_to_wait_long_is_called_unavailable_not_rate_limited(
    fake_server: FakeOpenAIServer, engine_for: Callable[..., Engine]
) -> None:
    engine = engine_for(make_config(fake_server.base_url))
    fake_server.fail_next(Failure(status=503, retry_after=120))
    with pytest.raises(ServerError) as caught:
        await reply(engine)
    message = str(caught.value)
    assert message.startswith("fake: unavailable or overloaded (503); retry after 120 s")
    assert "rate limited" not in message
    assert fake_server.chat_requests == 1


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_bad_requests_are_not_retried(
    fake_server: FakeOpenAIServer, engine_for: Callable[..., Engine], status: int
) -> None:
    engine = engine_for(make_config(fake_server.base_url))
    fake_server.fail_next(Failure(status=status))
    with pytest.raises(BadRequestError, match=rf"^fake: .*\({status}\)"):
        await reply(engine)
    assert fake_server.chat_requests == 1


async def test_an_unknown_model_id_on_the_server_names_the_fix(
    fake_server: FakeOpenAIServer, engine_for: Callable[..., Engine]
) -> None:
    engine = engine_for(make_config(fake_server.base_url))
    with pytest.raises(BadRequestError) as caught:
        await reply(engine, "fake:no-such-model")
    assert "model 'no-such-model' not found" in str(caught.value)
    assert "muxtui models" in str(caught.value)


async def test_a_stream_dropped_midway_keeps_the_partial_text_and_is_not_retried(
    fake_server: FakeOpenAIServer, engine_for: Callable[..., Engine]
) -> None:
    engine = engine_for(make_config(fake_server.base_url))
    fake_server.fail_next(Failure(drop_after_tokens=3))
    deltas: list[str] = []
    with pytest.raises(StreamInterruptedError) as caught:
        async for event in engine.chat("m", HI):
            if isinstance(event, ChatDelta):
                deltas.append(event.text)
    assert caught.value.partial_text == "tok tok tok "
    assert "".join(deltas) == "tok tok tok "
    assert str(caught.value).startswith("fake: the reply broke off after 12 characters")
    assert fake_server.chat_requests == 1


async def test_a_connection_dropped_before_any_text_is_retried(
    fake_server: FakeOpenAIServer, engine_for: Callable[..., Engine]
) -> None:
    engine = engine_for(make_config(fake_server.base_url))
    fake_server.fail_next(Failure(drop_after_tokens=0))
    text, _ = await reply(engine)
    assert text == "tok " * 5
    assert fake_server.chat_requests == 2


async def test_unreachable_server_is_retried_then_named(
    engine_for: Callable[..., Engine], unused_port: int
) -> None:
    url = f"http://127.0.0.1:{unused_port}/v1"
    engine = engine_for(make_config(url), RetryPolicy(retries=2, base_delay=0))
    with pytest.raises(UnreachableError) as caught:
        await reply(engine)
    message = str(caught.value)
    assert message.startswith(f"fake: cannot connect to {url} (connection refused)")
    assert "\n" not in message


# --- typed errors ----------------------------------------------------------------------------


async def test_a_rejected_key_gives_an_auth_error_without_the_key(
    engine_for: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-or-v1-0123456789abcdef-secret"
    monkeypatch.setenv("FAKE_API_KEY", secret)
    with FakeOpenAIServer(api_key="the-right-key") as server:
        engine = engine_for(make_config(server.base_url, api_key_env="FAKE_API_KEY"))
        with pytest.raises(AuthError) as caught:
            await reply(engine)
        chats = [r for r in server.requests if r.path.endswith("/chat/completions")]
        assert server.chat_requests == 0 and len(chats) == 1  # never retried
        assert chats[0].headers["authorization"] == f"Bearer {secret}"
    message = str(caught.value)
    assert message == "fake: the API key was rejected (401); check FAKE_API_KEY"
    assert secret not in message and secret not in repr(caught.value)


async def test_a_missing_key_says_where_to_set_it(engine_for: Callable[..., Engine]) -> None:
    with FakeOpenAIServer(api_key="the-right-key") as server:
        engine = engine_for(make_config(server.base_url))
        with pytest.raises(AuthError, match=r"none was sent \(401\); set api_key_env"):
            await reply(engine)


async def test_a_key_echoed_by_the_server_is_masked(
    fake_server: FakeOpenAIServer, engine_for: Callable[..., Engine]
) -> None:
    secret = "sk-very-secret-key-42"
    engine = engine_for(make_config(fake_server.base_url, api_key=secret))
    body = b'{"error": {"message": "key sk-very-secret-key-42 has no access to this model"}}'
    fake_server.fail_next(Failure(status=400, body=body))
    with pytest.raises(BadRequestError) as caught:
        await reply(engine)
    assert secret not in str(caught.value)
    assert "key **** has no access" in str(caught.value)


async def test_an_html_error_page_is_a_clear_server_error(
    fake_server: FakeOpenAIServer, engine_for: Callable[..., Engine]
) -> None:
    engine = engine_for(make_config(fake_server.base_url), RetryPolicy(retries=0))
    page = b"<html><body><h1>502 Bad Gateway</h1>\n<p>nginx</p></body></html>"
    fake_server.fail_next(Failure(status=502, body=page, content_type="text/html"))
    with pytest.raises(ServerError) as caught:
        await reply(engine)
    message = str(caught.value)
    assert message.startswith("fake: the server answered 502 with a non-JSON text/html page")
    assert "base_url" in message and "\n" not in message


async def test_garbage_in_a_200_reply_is_a_clear_server_error(
    fake_server: FakeOpenAIServer, engine_for: Callable[..., Engine]
) -> None:
    engine = engine_for(make_config(fake_server.base_url))
    fake_server.fail_next(Failure(body=b"\x00\x01 definitely not json", content_type="text/plain"))
    with pytest.raises(ServerError, match="is not an OpenAI-compatible chat completion"):
        await reply(engine)
    assert fake_server.chat_requests == 1


async def test_garbage_inside_an_event_stream_is_a_clear_server_error(
    fake_server: FakeOpenAIServer, engine_for: Callable[..., Engine]
) -> None:
    engine = engine_for(make_config(fake_server.base_url))
    body = b"data: {not json}\n\n"
    fake_server.fail_next(Failure(body=body, content_type="text/event-stream"))
    with pytest.raises(ServerError, match="is not an OpenAI-compatible event stream"):
        await reply(engine)


# --- cancellation ----------------------------------------------------------------------------


async def test_cancelling_midstream_closes_the_server_side_connection(
    fake_server: FakeOpenAIServer, engine_for: Callable[..., Engine]
) -> None:
    fake_server.behaviour = Behaviour(tokens=1000, token_gap=0.01)
    engine = engine_for(make_config(fake_server.base_url))
    first_delta = asyncio.Event()

    async def consume() -> None:
        async for event in engine.chat("m", HI):
            if isinstance(event, ChatDelta):
                first_delta.set()

    task = asyncio.create_task(consume())
    await first_delta.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await fake_server.wait_for(lambda: fake_server.disconnects_mid_stream == 1)
    assert fake_server.chat_requests == 1


async def test_closing_the_generator_midstream_closes_the_connection(
    fake_server: FakeOpenAIServer, engine_for: Callable[..., Engine]
) -> None:
    fake_server.behaviour = Behaviour(tokens=1000, token_gap=0.01)
    engine = engine_for(make_config(fake_server.base_url))
    stream = engine.chat("m", HI)
    async for event in stream:
        if isinstance(event, ChatDelta):
            break
    await stream.aclose()
    await fake_server.wait_for(lambda: fake_server.disconnects_mid_stream == 1)
    fake_server.behaviour = Behaviour()
    text, _ = await reply(engine)  # the engine carries on with a fresh connection
    assert text == "tok " * 5


# --- policy and health -----------------------------------------------------------------------


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = time.time()
    date = formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0


def test_backoff_is_full_jitter_and_never_below_retry_after() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0)
    assert policy.delay(0, rand=lambda: 0.999) == pytest.approx(0.4995)
    assert policy.delay(3, rand=lambda: 1.0) == 4.0  # 0.5 * 2**3 capped at 4
    assert policy.delay(10, rand=lambda: 0.0) == 0.0
    assert policy.delay(0, retry_after=2.0, rand=lambda: 1.0) == 2.0


def test_repeated_failures_put_an_endpoint_on_cooldown() -> None:
    policy = RetryPolicy(cooldown_after=3, cooldown_s=5.0)
    health = EndpointHealth()
    health.failed(policy, now=100.0)
    health.failed(policy, now=100.0)
    assert not health.cooling(now=100.0)
    health.failed(policy, now=100.0)
    assert health.cooling(now=104.0)
    assert not health.cooling(now=105.5)
    health.failed(policy, now=100.0)
    health.succeeded()
    assert not health.cooling(now=100.0)


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_policy_from_config_uses_network_retries(paths: Paths, tmp_path: Path) -> None:
    engine = Engine(Config(network=NetworkConfig(retries=7)), paths, discover=False)
    assert engine.retry_policy.retries == 7


@pytest.mark.parametrize("local", [False, True])
async def test_refused_connection_names_the_right_fix(local: bool) -> None:
    import socket

    import httpx

    from muxtui.engine.backends.base import Endpoint
    from muxtui.engine.retry import classify

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = Endpoint("gemma" if local else "box", f"http://127.0.0.1:{port}/v1", local=local)
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError) as caught:
            await client.get(f"{endpoint.base_url}/models")
    failure = classify(caught.value, endpoint)
    text = str(failure.error)
    assert failure.retryable
    if local:
        assert "local server stopped answering" in text and "base_url" not in text
    else:
        assert "base_url in the config" in text
