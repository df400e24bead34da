"""`muxtui serve` in-process, in front of the loopback test server: replies as sent, fields as
given, errors in OpenAI's shape, retries and fallbacks, the key, the size limit."""

from __future__ import annotations

import json
import os
import stat
from typing import Any

import httpx
import pytest

from muxtui.engine.catalog import entry_from_json, entry_to_json
from muxtui.engine.config import ServeConfig
from muxtui.engine.events import ModelEntry, ServerState
from muxtui.engine.paths import Paths
from tests.fake_server import Behaviour, Failure, FakeOpenAIServer
from tests.serve_support import Recorder, dead_port, normal, running_serve, serve_config

HELLO = {"messages": [{"role": "user", "content": "hello there"}]}


async def post(url: str, body: Any, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(f"{url}/v1/chat/completions", json=body, **kwargs)


async def test_replies_equal_the_direct_ones(fake_server: FakeOpenAIServer, paths: Paths) -> None:
    async with (
        running_serve(serve_config(fake_server.base_url), paths) as serve,
        httpx.AsyncClient(timeout=30) as client,
    ):
        for stream in (False, True):
            body = {**HELLO, "stream": stream}
            direct = await client.post(
                f"{fake_server.base_url}/chat/completions", json={"model": "fake-model", **body}
            )
            served = await client.post(
                f"{serve.url}/v1/chat/completions", json={"model": "m", **body}
            )
            assert served.status_code == direct.status_code == 200
            assert normal(served.content) == normal(direct.content)
            assert served.headers["content-type"].split(";")[0] == (
                "text/event-stream" if stream else "application/json"
            )
        assert served.content.count(b"data: ") == 8  # role, 5 tokens, final, [DONE]


async def test_every_field_reaches_the_upstream_as_given(
    fake_server: FakeOpenAIServer, paths: Paths
) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    body = {
        "messages": HELLO["messages"],
        "model": "m",
        "tools": tools,
        "tool_choice": "auto",
        "stop": ["\n\n"],
        "top_p": 0.5,
        "seed": 7,
        "response_format": {"type": "json_object"},
        "x_unknown": {"nested": [1, 2, None]},
    }
    async with running_serve(serve_config(fake_server.base_url), paths) as serve:
        for stream in (False, True):
            no_store = {"x-muxtui-cache": "no-store"}  # a seed asks for the cache; skip it
            response = await post(serve.url, {**body, "stream": stream}, headers=no_store)
            assert response.status_code == 200
            assert "x-muxtui-cache" not in response.headers
            sent = fake_server.requests[-1].json
            assert sent == {**body, "model": "fake-model", "stream": stream}
            assert list(sent) == [  # key order kept; only `model` replaced (and first)
                "model",
                *[name for name in body if name != "model"],
                "stream",
            ]


async def test_the_openai_package_completes_and_streams(
    fake_server: FakeOpenAIServer, paths: Paths
) -> None:
    import openai

    async with running_serve(serve_config(fake_server.base_url), paths) as serve:
        client = openai.AsyncOpenAI(base_url=f"{serve.url}/v1", api_key="unused", max_retries=0)
        try:
            completion = await client.chat.completions.create(model="m", messages=HELLO["messages"])  # type: ignore[arg-type]
            assert completion.choices[0].message.content == "tok " * 5
            assert completion.usage is not None and completion.usage.completion_tokens == 5
            stream = await client.chat.completions.create(
                model="m",
                messages=HELLO["messages"],  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
            )
            parts = [chunk async for chunk in stream]
            text = "".join(c.choices[0].delta.content or "" for c in parts if c.choices)
            assert text == "tok " * 5
            assert len(parts) >= 6
            models = await client.models.list()
            assert "m" in [model.id for model in models.data]
            with pytest.raises(openai.NotFoundError) as caught:
                await client.chat.completions.create(model="nope", messages=HELLO["messages"])  # type: ignore[arg-type]
            assert caught.value.code == "model_not_found"
        finally:
            await client.close()


async def test_injected_429_and_503_never_reach_the_client(paths: Paths) -> None:
    behaviour = Behaviour(fail_rate=0.1, fail_statuses=(429, 503))
    with FakeOpenAIServer(behaviour=behaviour) as upstream:
        async with (
            running_serve(serve_config(upstream.base_url), paths) as serve,
            httpx.AsyncClient(timeout=30) as client,
        ):
            statuses = []
            for n in range(60):
                body = {"model": "m", **HELLO, "stream": n % 2 == 1}
                response = await client.post(f"{serve.url}/v1/chat/completions", json=body)
                statuses.append(response.status_code)
                assert b"tok tok" in response.content or b"tok " in response.content
        assert upstream.injected_failures > 0
        assert statuses == [200] * 60


async def test_a_model_whose_upstream_is_down_falls_back(
    fake_server: FakeOpenAIServer, paths: Paths
) -> None:
    config = serve_config(fake_server.base_url, dead_url=f"http://127.0.0.1:{dead_port()}/v1")
    async with running_serve(config, paths) as serve:
        for stream in (False, True):
            response = await post(serve.url, {"model": "down", **HELLO, "stream": stream})
            assert response.status_code == 200
            assert b"tok " in response.content
        assert fake_server.chat_requests == 2


async def test_an_upstream_down_without_fallback_is_502_in_openai_shape(paths: Paths) -> None:
    config = serve_config(f"http://127.0.0.1:{dead_port()}/v1")
    async with running_serve(config, paths) as serve:
        for stream in (False, True):
            response = await post(serve.url, {"model": "m", **HELLO, "stream": stream})
            assert response.status_code == 502
            error = response.json()["error"]
            assert error["code"] == "upstream_unreachable" and error["param"] is None


async def test_upstream_rate_limits_that_last_are_429(paths: Paths) -> None:
    with FakeOpenAIServer(behaviour=Behaviour(fail_rate=1.0, fail_statuses=(429,))) as upstream:
        async with running_serve(serve_config(upstream.base_url), paths) as serve:
            response = await post(serve.url, {"model": "m", **HELLO})
            assert response.status_code == 429
            assert response.json()["error"]["type"] == "rate_limit_error"


async def test_bad_requests_get_openai_errors(fake_server: FakeOpenAIServer, paths: Paths) -> None:
    async with (
        running_serve(serve_config(fake_server.base_url), paths) as serve,
        httpx.AsyncClient(timeout=30) as client,
    ):
        url = f"{serve.url}/v1/chat/completions"
        cases = [
            (b"{not json", 400, "invalid_json"),
            (b"[]", 400, "invalid_json"),
            (json.dumps(HELLO).encode(), 400, "missing_model"),
            (b'{"model": "m"}', 400, "missing_messages"),
            (json.dumps({"model": "nope", **HELLO}).encode(), 404, "model_not_found"),
        ]
        for raw, status, code in cases:
            response = await client.post(url, content=raw)
            assert response.status_code == status
            error = response.json()["error"]
            assert error["code"] == code and error["message"] and "type" in error
        assert (await client.get(f"{serve.url}/nowhere")).status_code == 404
        assert fake_server.chat_requests == 0


async def test_a_body_over_the_limit_is_413(fake_server: FakeOpenAIServer, paths: Paths) -> None:
    config = serve_config(fake_server.base_url, serve=ServeConfig(max_body_mb=0.01))
    async with running_serve(config, paths) as serve:
        big = {"model": "m", "messages": [{"role": "user", "content": "x" * 20_000}]}
        response = await post(serve.url, big)
        assert response.status_code == 413
        assert "max_body_mb" in response.json()["error"]["message"]
        assert (await post(serve.url, {"model": "m", **HELLO})).status_code == 200
    assert fake_server.chat_requests == 1


async def test_with_a_key_requests_without_it_get_401(
    fake_server: FakeOpenAIServer, paths: Paths
) -> None:
    key = "sk-serve-test-0123456789"
    async with running_serve(serve_config(fake_server.base_url), paths, key=key) as serve:
        body = {"model": "m", **HELLO}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": key}):
            response = await post(serve.url, body, headers=headers)
            assert response.status_code == 401
            assert key not in response.text
            assert response.json()["error"]["type"] == "authentication_error"
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{serve.url}/v1/models")).status_code == 401
            assert (await client.get(f"{serve.url}/health")).status_code == 200
        ok = await post(serve.url, body, headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
    assert fake_server.chat_requests == 1


async def test_models_health_and_the_llama_swap_routes(
    fake_server: FakeOpenAIServer, paths: Paths
) -> None:
    async with (
        running_serve(serve_config(fake_server.base_url), paths) as serve,
        httpx.AsyncClient(timeout=30) as client,
    ):
        models = (await client.get(f"{serve.url}/v1/models")).json()
        assert models["object"] == "list"
        (row,) = [item for item in models["data"] if item["id"] == "m"]
        assert row["owned_by"] == "fake" and row["muxtui"]["model_id"] == "fake-model"
        health = (await client.get(f"{serve.url}/health")).json()
        assert health["status"] == "ok" and health["pid"] == os.getpid()
        assert (await client.get(f"{serve.url}/running")).json() == {"running": []}
        assert (await client.post(f"{serve.url}/api/models/unload")).status_code == 200
        gone = await client.post(f"{serve.url}/api/models/unload/m")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"
        mine = (await client.get(f"{serve.url}/muxtui/v1/models")).json()["models"]
        assert [entry_from_json(obj).name for obj in mine] == [row["id"] for row in models["data"]]
        assert (await client.get(f"{serve.url}/muxtui/v1/sample")).json() == {}


async def test_the_state_file_is_private_while_serve_runs(
    fake_server: FakeOpenAIServer, paths: Paths
) -> None:
    async with running_serve(serve_config(fake_server.base_url), paths) as serve:
        state_file = paths.serve_state_file
        state = json.loads(state_file.read_bytes())
        assert state["url"] == serve.url and state["pid"] == os.getpid()
        assert state["api_key_env"] == "" and state["version"]
        assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(state_file.parent.stat().st_mode) == 0o700
    assert not state_file.exists()


async def test_a_client_going_away_mid_stream_closes_the_upstream(paths: Paths) -> None:
    with FakeOpenAIServer(behaviour=Behaviour(tokens=200, token_gap=0.02)) as upstream:
        async with (
            running_serve(serve_config(upstream.base_url), paths) as serve,
            httpx.AsyncClient(timeout=30) as client,
        ):
            body = {"model": "m", **HELLO, "stream": True}
            async with client.stream(
                "POST", f"{serve.url}/v1/chat/completions", json=body
            ) as response:
                async for _chunk in response.aiter_bytes():
                    break
            await upstream.wait_for(lambda: upstream.disconnects_mid_stream == 1)
            assert upstream.requests_served == 0


def test_entries_round_trip_through_json() -> None:
    entry = ModelEntry("g", "local", True, ServerState.WARM, port=1234, pid=9, pinned=True)
    assert entry_from_json(entry_to_json(entry)) == entry
    obj = entry_to_json(entry) | {"state": "weird", "future_field": 1}
    assert entry_from_json(obj).state is ServerState.REMOTE
    with pytest.raises(ValueError):
        entry_from_json({"provider": "x"})


async def test_the_observer_hears_each_request(fake_server: FakeOpenAIServer, paths: Paths) -> None:
    recorder = Recorder()
    config = serve_config(fake_server.base_url, dead_url=f"http://127.0.0.1:{dead_port()}/v1")
    async with running_serve(config, paths, observer=recorder) as serve:
        assert (await post(serve.url, {"model": "m", **HELLO})).status_code == 200
        streamed = await post(
            serve.url,
            {"model": "down", **HELLO, "stream": True, "stream_options": {"include_usage": True}},
        )
        assert streamed.status_code == 200
        assert (await post(serve.url, {"model": "nope", **HELLO})).status_code == 404
    started = [("request_started", "m"), ("request_started", "down")]
    assert recorder.named("request_started") == started
    assert recorder.named("fallback") == [("fallback", "down")]
    assert recorder.named("first_byte") == [("first_byte", "down")]
    assert recorder.named("token")  # the chunks after the first
    assert recorder.named("finished") == [
        ("finished", "m", "ok", 2, 5),
        ("finished", "down", "ok", 2, 5),
    ]


async def test_upstream_errors_never_show_the_providers_key(paths: Paths) -> None:
    from muxtui.engine.config import ProviderConfig

    secret = "sk-upstream-secret-0123456789"
    with FakeOpenAIServer() as upstream:
        config = serve_config(upstream.base_url)
        config.providers["fake"] = ProviderConfig(base_url=upstream.base_url, api_key=secret)
        async with running_serve(config, paths) as serve:
            for status in (400, 401, 500):
                upstream.fail_next(*[Failure(status=status, echo_header="Authorization")] * 8)
                response = await post(serve.url, {"model": "m", **HELLO})
                assert response.status_code >= 400
                assert secret not in response.text
                assert response.json()["error"]["message"]
            assert upstream.requests[-1].headers["authorization"] == f"Bearer {secret}"


async def test_history_is_off_by_default_and_records_when_on(
    fake_server: FakeOpenAIServer, paths: Paths
) -> None:
    from muxtui.engine.core import Engine

    async with running_serve(serve_config(fake_server.base_url), paths) as serve:
        assert (await post(serve.url, {"model": "m", **HELLO})).status_code == 200
        assert await serve.engine.list_conversations() == []
    config = serve_config(fake_server.base_url, serve=ServeConfig(history=True))
    async with running_serve(config, paths) as serve:
        for stream in (False, True):
            response = await post(serve.url, {"model": "m", **HELLO, "stream": stream})
            assert response.status_code == 200
    async with Engine(config, paths, discover=False) as engine:
        conversations = await engine.list_conversations()
        assert len(conversations) == 2
        for conversation in conversations:
            messages = await engine.conversation_messages(conversation.id)
            assert [(m.role, m.content) for m in messages] == [
                ("user", "hello there"),
                ("assistant", "tok " * 5),
            ]


async def test_a_stream_that_breaks_after_text_is_not_retried(
    fake_server: FakeOpenAIServer, paths: Paths
) -> None:
    recorder = Recorder()
    fake_server.fail_next(Failure(drop_after_tokens=2))
    async with running_serve(serve_config(fake_server.base_url), paths, observer=recorder) as serve:
        response = await post(serve.url, {"model": "m", **HELLO, "stream": True})
        assert response.status_code == 200
        blocks = [block for block in response.content.split(b"\n\n") if block]
        assert blocks[1].count(b"tok ") == 1 and blocks[2].count(b"tok ") == 1
        error = json.loads(blocks[-1].removeprefix(b"data: "))["error"]
        assert error["code"] == "stream_broken"
        assert fake_server.chat_requests == 1
    assert recorder.named("finished") == [("finished", "m", "error", 0, 0)]
