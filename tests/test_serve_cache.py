"""serve and the response cache: a repeated temperature-0 request is a hit that no server sees,
whole or replayed as SSE chunks; a changed body misses; headers force or skip it; a fallback's
reply is not stored under the model asked for."""

from __future__ import annotations

import json
from typing import Any

import httpx

from muxtui.engine.config import ResponseCacheConfig
from muxtui.engine.paths import Paths
from tests.fake_server import FakeOpenAIServer
from tests.serve_support import Recorder, dead_port, running_serve, serve_config

ZERO = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "temperature": 0}


async def chat(client: httpx.AsyncClient, url: str, body: Any, **headers: str) -> httpx.Response:
    return await client.post(f"{url}/v1/chat/completions", json=body, headers=headers)


def events(response: httpx.Response) -> list[bytes]:
    return [block for block in response.content.split(b"\n\n") if block]


async def test_a_repeat_is_a_hit_whole_and_streamed(
    fake_server: FakeOpenAIServer, paths: Paths
) -> None:
    recorder = Recorder()
    async with (
        running_serve(serve_config(fake_server.base_url), paths, observer=recorder) as serve,
        httpx.AsyncClient(timeout=30) as client,
    ):
        first = await chat(client, serve.url, ZERO)
        assert first.headers["x-muxtui-cache"] == "miss"
        await serve.app.drain()  # the store happens after the reply went out
        second = await chat(client, serve.url, ZERO)
        assert second.headers["x-muxtui-cache"] == "hit"
        assert second.json()["choices"] == first.json()["choices"]
        assert second.json()["usage"] == first.json()["usage"]
        streamed = await chat(
            client,
            serve.url,
            {**ZERO, "stream": True, "stream_options": {"include_usage": True}},
        )
        assert streamed.headers["x-muxtui-cache"] == "hit"
        assert streamed.headers["content-type"].startswith("text/event-stream")
        chunks = events(streamed)
        assert len(chunks) >= 4 and chunks[-1] == b"data: [DONE]"
        objects = [json.loads(chunk[6:]) for chunk in chunks[:-1]]
        text = "".join(
            o["choices"][0]["delta"].get("content") or "" for o in objects if o["choices"]
        )
        assert text == first.json()["choices"][0]["message"]["content"]
        assert objects[-1]["usage"] == first.json()["usage"]
        assert fake_server.chat_requests == 1
    assert recorder.named("cache") == [
        ("cache", "m", False),
        ("cache", "m", True),
        ("cache", "m", True),
    ]


async def test_a_streamed_miss_is_stored_and_the_openai_client_reads_hits(
    fake_server: FakeOpenAIServer, paths: Paths
) -> None:
    import openai

    async with running_serve(serve_config(fake_server.base_url), paths) as serve:
        client = openai.AsyncOpenAI(base_url=f"{serve.url}/v1", api_key="x", max_retries=0)
        try:
            messages: Any = ZERO["messages"]
            for _ in range(2):
                stream = await client.chat.completions.create(
                    model="m", messages=messages, temperature=0, stream=True
                )
                parts = [chunk async for chunk in stream]
                text = "".join(c.choices[0].delta.content or "" for c in parts if c.choices)
                assert text == "tok " * 5 and len(parts) > 2
                await serve.app.drain()
            whole = await client.chat.completions.create(
                model="m", messages=messages, temperature=0
            )
            assert whole.choices[0].message.content == "tok " * 5
        finally:
            await client.close()
    assert fake_server.chat_requests == 1


async def test_a_changed_body_misses_and_headers_force_or_skip(
    fake_server: FakeOpenAIServer, paths: Paths
) -> None:
    async with (
        running_serve(serve_config(fake_server.base_url), paths) as serve,
        httpx.AsyncClient(timeout=30) as client,
    ):
        await chat(client, serve.url, ZERO)
        await serve.app.drain()
        changed = await chat(client, serve.url, {**ZERO, "top_p": 0.5})
        assert changed.headers["x-muxtui-cache"] == "miss"
        skipped = await chat(client, serve.url, ZERO, **{"x-muxtui-cache": "no-store"})
        assert "x-muxtui-cache" not in skipped.headers
        warm = {**ZERO, "temperature": 0.7}
        assert "x-muxtui-cache" not in (await chat(client, serve.url, warm)).headers
        forced = await chat(client, serve.url, warm, **{"x-muxtui-cache": "force"})
        assert forced.headers["x-muxtui-cache"] == "miss"
        await serve.app.drain()
        again = await chat(client, serve.url, warm, **{"x-muxtui-cache": "force"})
        assert again.headers["x-muxtui-cache"] == "hit"
    assert fake_server.chat_requests == 5


async def test_no_cache_when_it_is_off(fake_server: FakeOpenAIServer, paths: Paths) -> None:
    config = serve_config(fake_server.base_url)
    config.response_cache = ResponseCacheConfig(backend="off")
    async with (
        running_serve(config, paths) as serve,
        httpx.AsyncClient(timeout=30) as client,
    ):
        for _ in range(2):
            response = await chat(client, serve.url, ZERO)
            assert "x-muxtui-cache" not in response.headers
            await serve.app.drain()
    assert fake_server.chat_requests == 2


async def test_a_fallbacks_reply_is_not_stored_for_the_model_asked(
    fake_server: FakeOpenAIServer, paths: Paths
) -> None:
    from muxtui.engine.cache.facade import remote_identity
    from muxtui.engine.cache.key import cache_key

    config = serve_config(fake_server.base_url, dead_url=f"http://127.0.0.1:{dead_port()}/v1")
    body = {**ZERO, "model": "down"}
    async with (
        running_serve(config, paths) as serve,
        httpx.AsyncClient(timeout=30) as client,
    ):
        for stream in (False, True):
            response = await chat(client, serve.url, {**body, "stream": stream})
            assert response.status_code == 200
            await serve.app.drain()
            engine = serve.engine
            primary = remote_identity(engine.router.resolve("down"))
            assert await engine.response_cache.get(cache_key(body, primary)) is None
        assert fake_server.chat_requests == 2
