"""Serve's aiohttp posters (engine/serve/poster.py) against the loopback test server: pooled
connections reused, retries on 429/503 as with httpx, failures typed as httpx's, streams closed
or returned to the pool, sessions closed with the engine."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from muxtui.engine.config import Config, NetworkConfig
from muxtui.engine.core import Engine
from muxtui.engine.errors import RateLimitedError, UnreachableError
from muxtui.engine.paths import Paths
from muxtui.engine.retry import ATTEMPT_FAILURES, RetryPolicy
from muxtui.engine.serve.poster import AiohttpPoster
from tests.fake_server import Behaviour, Failure, FakeOpenAIServer
from tests.serve_support import FAST, dead_port, serve_config

PAYLOAD = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
STREAMED = json.dumps(
    {"messages": [{"role": "user", "content": "hi"}], "stream": True}, separators=(",", ":")
).encode()


@asynccontextmanager
async def engine_for(
    config: Config, paths: Paths, policy: RetryPolicy = FAST
) -> AsyncIterator[Engine]:
    async with Engine(config, paths, discover=False, retry_policy=policy) as engine:
        yield engine


async def test_requests_reuse_pooled_connections(
    fake_server: FakeOpenAIServer, paths: Paths
) -> None:
    async with engine_for(serve_config(fake_server.base_url), paths) as engine:
        (target,) = await engine.plan("m")
        for _ in range(10):
            reply = await engine.send_chat_to(target, PAYLOAD)
            assert reply.status == 200 and reply.parsed["choices"]
        for _ in range(5):  # streams read to their end go back to the pool
            stream = await engine.open_chat_stream(target, STREAMED)
            rest = b"".join([chunk async for chunk in stream])
            await stream.aclose()
            assert (stream.first + rest).endswith(b"data: [DONE]\n\n")
        assert fake_server.chat_requests == 15
        assert fake_server.connections_accepted == 1
        posters = engine.serve_routes.forwarder
        assert len(posters.sessions) == 1
    assert posters.sessions._closed  # closed with the engine


async def test_concurrent_requests_stay_within_the_connection_limit(paths: Paths) -> None:
    import asyncio

    with FakeOpenAIServer(behaviour=Behaviour(first_byte_delay=0.02)) as upstream:
        config = serve_config(upstream.base_url)
        config.network = NetworkConfig(discovery=False, max_keepalive=4)
        config.serve.max_connections = 4
        async with engine_for(config, paths) as engine:
            (target,) = await engine.plan("m")
            replies = await asyncio.gather(
                *(engine.send_chat_to(target, PAYLOAD) for _ in range(16))
            )
            assert all(reply.status == 200 for reply in replies)
            assert upstream.connections_accepted == 4
            assert upstream.max_in_flight == 4


async def test_429_and_503_are_retried(fake_server: FakeOpenAIServer, paths: Paths) -> None:
    async with engine_for(serve_config(fake_server.base_url), paths) as engine:
        (target,) = await engine.plan("m")
        fake_server.fail_next(Failure(status=429), Failure(status=503))
        assert (await engine.send_chat_to(target, PAYLOAD)).status == 200
        assert fake_server.chat_requests == 3
        fake_server.fail_next(Failure(status=503), Failure(status=429))
        stream = await engine.open_chat_stream(target, STREAMED)
        await stream.aclose()
        assert fake_server.chat_requests == 6
        fake_server.fail_next(*[Failure(status=429)] * 10)
        with pytest.raises(RateLimitedError):
            await engine.send_chat_to(target, PAYLOAD)


async def test_a_dead_port_is_unreachable_and_says_refused(paths: Paths) -> None:
    async with engine_for(serve_config(f"http://127.0.0.1:{dead_port()}/v1"), paths) as engine:
        (target,) = await engine.plan("m")
        for send in (engine.send_chat_to, engine.open_chat_stream):
            with pytest.raises(UnreachableError, match="connection refused"):
                await send(target, PAYLOAD)


async def test_a_stream_cut_off_fails_as_httpx_does_and_closes(paths: Paths) -> None:
    behaviour = Behaviour(tokens=50, token_gap=0.002)
    with FakeOpenAIServer(behaviour=behaviour) as upstream:
        async with engine_for(serve_config(upstream.base_url), paths) as engine:
            (target,) = await engine.plan("m")
            upstream.fail_next(Failure(drop_after_tokens=10))
            stream = await engine.open_chat_stream(target, STREAMED)
            with pytest.raises(ATTEMPT_FAILURES) as caught:
                async for _chunk in stream:
                    pass
            assert isinstance(caught.value, httpx.TransportError)
            await stream.aclose()
            # A stream left half read is closed, not handed back to the pool.
            stream = await engine.open_chat_stream(target, STREAMED)
            await stream.aclose()
            await upstream.wait_for(lambda: upstream.disconnects_mid_stream == 1)
            assert (await engine.send_chat_to(target, PAYLOAD)).status == 200


async def test_the_environment_proxy_is_ignored_for_loopback(
    fake_server: FakeOpenAIServer, paths: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead_port()}")
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{dead_port()}")
    async with engine_for(serve_config(fake_server.base_url), paths) as engine:
        (target,) = await engine.plan("m")
        assert (await engine.send_chat_to(target, PAYLOAD)).status == 200


async def test_the_poster_sends_the_endpoint_headers(paths: Paths) -> None:
    import aiohttp

    from muxtui.engine.backends.base import Endpoint

    with FakeOpenAIServer(api_key="k-1") as upstream:
        endpoint = Endpoint("fake", upstream.base_url, api_key="k-1", headers={"X-Extra": "1"})
        async with aiohttp.ClientSession() as session:
            poster = AiohttpPoster(session, "openai", endpoint)
            body = b'{"model":"fake-model","messages":[{"role":"user","content":"hi"}]}'
            reply = await poster.post_chat(body)
            assert reply.status_code == 200
            assert reply.headers["content-type"].startswith("application/json")
            (seen,) = upstream.requests
            assert seen.headers["authorization"] == "Bearer k-1"
            assert seen.headers["x-extra"] == "1"
            assert seen.body == body  # sent as given


async def test_redirects_are_not_followed(fake_server: FakeOpenAIServer) -> None:
    import aiohttp
    from aiohttp import web

    from muxtui.engine.backends.base import Endpoint

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"{fake_server.base_url}/chat/completions")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", moved)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            poster = AiohttpPoster(session, "openai", Endpoint("r", f"http://127.0.0.1:{port}/v1"))
            assert (await poster.post_chat(PAYLOAD)).status_code == 307
            stream = await poster.open_stream(STREAMED)
            assert stream.status_code == 307
            await stream.aread()
            await stream.aclose()
        assert fake_server.chat_requests == 0
    finally:
        await runner.cleanup()


async def test_an_ollama_provider_is_sent_to_its_openai_path(
    fake_server: FakeOpenAIServer, paths: Paths
) -> None:
    from muxtui.engine.config import ProviderConfig

    config = serve_config(fake_server.base_url)
    config.providers["fake"] = ProviderConfig(kind="ollama", base_url=fake_server.root_url)
    async with engine_for(config, paths) as engine:
        (target,) = await engine.plan("m")
        assert (await engine.send_chat_to(target, PAYLOAD)).status == 200
        stream = await engine.open_chat_stream(target, STREAMED)
        await stream.aclose()
    assert [r.path for r in fake_server.requests] == ["/v1/chat/completions"] * 2
    assert fake_server.requests[1].headers["accept"] == "text/event-stream"


async def test_a_hundred_concurrent_streams_through_serve_get_every_token(paths: Paths) -> None:
    import asyncio

    import aiohttp

    from tests.serve_support import running_serve

    tokens = 20
    with FakeOpenAIServer(behaviour=Behaviour(tokens=tokens, token_gap=0.001)) as upstream:
        async with (
            running_serve(serve_config(upstream.base_url), paths) as serve,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as client,
        ):
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}

            async def one() -> bytes:
                url = f"{serve.url}/v1/chat/completions"
                async with client.post(url, json=body) as response:
                    assert response.status == 200
                    return await response.read()

            replies = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(100))), 60)
        for reply in replies:
            assert reply.count(b'"content": "tok "') + reply.count(b'"content":"tok "') == tokens
            assert reply.endswith(b"data: [DONE]\n\n")
        assert upstream.chat_requests == 100
        assert upstream.connections_accepted <= 64  # [serve] max_connections
