"""Tests of the fake OpenAI/Ollama server itself, over real sockets with real httpx clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_server import Behaviour, Failure, FakeOpenAIServer

SCRIPT = Path(__file__).with_name("fake_server.py")
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(models=("fake-model", "other-model")) as srv:
        yield srv


def chat(stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": MESSAGES, "stream": stream, **extra}


def sse_payloads(lines: list[str]) -> list[str]:
    return [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]


def content_deltas(payloads: list[str]) -> list[str]:
    out = []
    for p in payloads:
        if p != "[DONE]" and "content" in (delta := json.loads(p)["choices"][0]["delta"]):
            out.append(delta["content"])
    return [c for c in out if c]


# ----- basics ------------------------------------------------------------------------------
def test_keep_alive_reuses_one_connection(server: FakeOpenAIServer) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        for _ in range(100):
            assert client.post("/chat/completions", json=chat()).status_code == 200
    # The server counts a request after its last byte left, so the client can be a step ahead.
    deadline = time.monotonic() + 5
    while (server.requests_served, server.in_flight) != (100, 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.connections_accepted == 1
    assert server.requests_served == 100
    assert server.chat_requests == 100
    assert server.in_flight == 0


def test_models_health_and_recorded_requests(server: FakeOpenAIServer) -> None:
    with httpx.Client() as client:
        assert client.get(f"{server.root_url}/health").json() == {"status": "ok"}
        models = client.get(f"{server.base_url}/models", headers={"X-Trace": "1"}).json()
        assert models["object"] == "list"
        assert [m["id"] for m in models["data"]] == ["fake-model", "other-model"]
        assert all(m["object"] == "model" and m["owned_by"] == "fake" for m in models["data"])
        client.post(f"{server.base_url}/chat/completions", json=chat(max_tokens=2))
    assert [r.path for r in server.requests] == ["/health", "/v1/models", "/v1/chat/completions"]
    assert server.requests[1].headers["x-trace"] == "1"
    assert server.requests[2].method == "POST"
    assert server.requests[2].json == chat(max_tokens=2)
    assert server.requests_served == 3
    server.reset_counters()
    assert (server.requests_served, server.chat_requests, server.requests) == (0, 0, [])


def test_non_streamed_reply(server: FakeOpenAIServer) -> None:
    server.behaviour.tokens = 7
    r = httpx.post(f"{server.base_url}/chat/completions", json=chat())
    body = r.json()
    assert r.headers["content-type"] == "application/json"
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "tok " * 7}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 7, "total_tokens": 11}
    assert "timings" not in body


def test_streamed_reply_token_count_and_done(server: FakeOpenAIServer) -> None:
    server.behaviour = Behaviour(tokens=6, token_text="ab ", include_timings=True)
    with httpx.Client() as client:
        req = chat(stream=True)
        with client.stream("POST", f"{server.base_url}/chat/completions", json=req) as r:
            assert r.headers["content-type"] == "text/event-stream"
            assert r.headers["transfer-encoding"] == "chunked"
            payloads = sse_payloads(list(r.iter_lines()))
    assert json.loads(payloads[0])["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert content_deltas(payloads) == ["ab "] * 6
    assert payloads[-1] == "[DONE]"
    final = json.loads(payloads[-2])
    assert final["object"] == "chat.completion.chunk"
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["usage"] == {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}
    assert final["timings"]["predicted_n"] == 6 and final["timings"]["prompt_n"] == 4
    assert server.requests_served == 1


def test_max_tokens_caps_and_reports_length(server: FakeOpenAIServer) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        body = client.post("/chat/completions", json=chat(max_tokens=3)).json()
        assert body["choices"][0]["finish_reason"] == "length"
        assert body["usage"]["completion_tokens"] == 3
        with client.stream("POST", "/chat/completions", json=chat(True, max_tokens=2)) as r:
            payloads = sse_payloads(list(r.iter_lines()))
    assert len(content_deltas(payloads)) == 2
    assert json.loads(payloads[-2])["choices"][0]["finish_reason"] == "length"


def test_first_byte_delay_is_honoured(server: FakeOpenAIServer) -> None:
    server.behaviour.first_byte_delay = 0.2
    with httpx.Client() as client:
        t0 = time.perf_counter()
        req = chat(stream=True)
        with client.stream("POST", f"{server.base_url}/chat/completions", json=req) as r:
            assert time.perf_counter() - t0 >= 0.199  # headers only come after the delay
            assert r.status_code == 200
            r.read()


def test_token_gap_is_honoured(server: FakeOpenAIServer) -> None:
    server.behaviour = Behaviour(tokens=5, token_gap=0.05)
    with httpx.Client() as client:
        times = []
        req = chat(stream=True)
        with client.stream("POST", f"{server.base_url}/chat/completions", json=req) as r:
            for line in r.iter_lines():
                if line.startswith("data: ") and content_deltas([line[6:]]):
                    times.append(time.perf_counter())
    assert len(times) == 5
    assert times[-1] - times[0] >= 4 * 0.05 - 0.001


def test_unknown_model_and_route_are_404(server: FakeOpenAIServer) -> None:
    with httpx.Client(base_url=server.root_url) as client:
        r = client.post("/v1/chat/completions", json=chat(model="nope"))
        assert r.status_code == 404
        assert "nope" in r.json()["error"]["message"]
        r = client.get("/v1/nothing-here")
        assert r.status_code == 404 and "error" in r.json()
        assert client.post("/api/chat", json=chat(model="nope")).status_code == 404


def test_connection_close_is_honoured(server: FakeOpenAIServer) -> None:
    with httpx.Client(base_url=server.base_url, headers={"Connection": "close"}) as client:
        for _ in range(2):
            r = client.post("/chat/completions", json=chat())
            assert r.status_code == 200 and r.headers["connection"] == "close"
    assert server.connections_accepted == 2
    server.wait_for_sync(lambda: server.connections_open == 0)


def test_chunked_request_body(server: FakeOpenAIServer) -> None:
    parts = [b'{"model": "fake-model", ', b'"messages": [{"role": "user", "content": "a b c"}]}']
    r = httpx.post(f"{server.base_url}/chat/completions", content=iter(parts))
    assert r.status_code == 200
    assert r.json()["usage"]["prompt_tokens"] == 3
    assert server.requests[0].headers["transfer-encoding"] == "chunked"
    assert server.requests[0].json == json.loads(b"".join(parts))


def test_startup_delay_health(server: FakeOpenAIServer) -> None:
    server.behaviour.startup_delay = 60.0
    r = httpx.get(f"{server.root_url}/health")
    assert (r.status_code, r.json()) == (503, {"status": "loading"})
    server.behaviour.startup_delay = 0.0
    assert httpx.get(f"{server.root_url}/health").status_code == 200


# ----- injected failures -------------------------------------------------------------------
def test_failures_are_popped_in_order(server: FakeOpenAIServer) -> None:
    server.fail_next(
        Failure(status=429, retry_after=2),
        Failure(status=429, retry_after=1.5),
        Failure(status=500),
        Failure(status=503),
    )
    with httpx.Client(base_url=server.base_url) as client:
        responses = [client.post("/chat/completions", json=chat()) for _ in range(5)]
    assert [r.status_code for r in responses] == [429, 429, 500, 503, 200]
    assert responses[0].headers["retry-after"] == "2"
    assert responses[1].headers["retry-after"] == "1.5"
    assert "retry-after" not in responses[2].headers
    assert responses[0].json()["error"]["type"] == "rate_limit_error"
    for r in responses[2:4]:
        assert set(r.json()["error"]) >= {"message", "type"}
    assert server.chat_requests == 5 and server.connections_accepted == 1


def test_api_key_required(server: FakeOpenAIServer) -> None:
    server.api_key = "sekrit"
    url = f"{server.base_url}/chat/completions"
    with httpx.Client() as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            r = client.post(url, json=chat(), headers=headers)
            assert r.status_code == 401
            assert r.json()["error"] == {
                "message": "Invalid API key",
                "type": "invalid_request_error",
                "code": 401,
            }
        assert client.get(f"{server.base_url}/models").status_code == 401
        assert client.get(f"{server.root_url}/health").status_code == 200
        ok = client.post(url, json=chat(), headers={"Authorization": "Bearer sekrit"})
        assert ok.status_code == 200
    assert server.requests[-1].headers["authorization"] == "Bearer sekrit"


def test_drop_mid_stream(server: FakeOpenAIServer) -> None:
    server.behaviour.tokens = 10
    server.fail_next(Failure(drop_after_tokens=3))
    tokens: list[str] = []
    lines: list[str] = []
    with httpx.Client() as client:
        req = chat(stream=True)
        with (
            pytest.raises(httpx.RemoteProtocolError),
            client.stream("POST", f"{server.base_url}/chat/completions", json=req) as r,
        ):
            for line in r.iter_lines():
                lines.append(line)
                tokens += content_deltas(sse_payloads([line]))
        assert tokens == ["tok "] * 3
        assert "data: [DONE]" not in lines
        # the next request works normally on a fresh connection
        assert client.post(f"{server.base_url}/chat/completions", json=chat()).status_code == 200
    assert server.connections_accepted == 2


def test_end_early_closes_the_stream_cleanly_without_a_finish(server: FakeOpenAIServer) -> None:
    server.fail_next(Failure(end_after_tokens=2))
    with httpx.Client() as client:
        r = client.post(f"{server.base_url}/chat/completions", json=chat(stream=True))
        payloads = sse_payloads(r.text.splitlines())
        assert r.status_code == 200
        assert content_deltas(payloads) == ["tok "] * 2
        assert "[DONE]" not in payloads
        assert all(json.loads(p)["choices"][0]["finish_reason"] is None for p in payloads)
        # the body ended well-formed, so the connection stays usable
        assert client.post(f"{server.base_url}/chat/completions", json=chat()).status_code == 200
    assert server.connections_accepted == 1


def test_an_error_body_can_echo_a_request_header(server: FakeOpenAIServer) -> None:
    server.fail_next(Failure(status=400, echo_header="X-Api-Key"))
    r = httpx.post(
        f"{server.base_url}/chat/completions", json=chat(), headers={"X-Api-Key": "k-123"}
    )
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "header X-Api-Key: k-123 is not accepted here"


def test_drop_non_streamed(server: FakeOpenAIServer) -> None:
    server.fail_next(Failure(drop_after_tokens=0))
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(f"{server.base_url}/chat/completions", json=chat())


def test_garbage_bodies(server: FakeOpenAIServer) -> None:
    server.fail_next(
        Failure(status=502, body=b"<html>garbage</html>", content_type="text/html"),
        Failure(body=b"this is not json"),
    )
    with httpx.Client(base_url=server.base_url) as client:
        r = client.post("/chat/completions", json=chat())
        assert (r.status_code, r.text, r.headers["content-type"]) == (
            502,
            "<html>garbage</html>",
            "text/html",
        )
        r = client.post("/chat/completions", json=chat(stream=True))
        assert r.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            r.json()


# ----- concurrency and disconnects -----------------------------------------------------------
async def test_concurrent_streams_counters(server: FakeOpenAIServer) -> None:
    server.behaviour = Behaviour(tokens=4, token_gap=0.05, first_byte_delay=0.3)
    limits = httpx.Limits(max_connections=50)

    async def one(client: httpx.AsyncClient) -> int:
        async with client.stream("POST", "/chat/completions", json=chat(stream=True)) as r:
            return len(content_deltas(sse_payloads([line async for line in r.aiter_lines()])))

    async with httpx.AsyncClient(base_url=server.base_url, limits=limits) as client:
        counts = await asyncio.gather(*(one(client) for _ in range(20)))
    assert counts == [4] * 20
    assert server.max_in_flight == 20
    assert server.connections_accepted == 20
    await server.wait_for(lambda: server.in_flight == 0)
    assert server.requests_served == 20 and server.disconnects_mid_stream == 0


async def test_client_closing_early_is_counted(server: FakeOpenAIServer) -> None:
    server.behaviour = Behaviour(tokens=500, token_gap=0.01)
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        async with client.stream("POST", "/chat/completions", json=chat(stream=True)) as r:
            seen = 0
            async for line in r.aiter_lines():
                seen += len(content_deltas(sse_payloads([line])))
                if seen == 2:
                    break
        await server.wait_for(lambda: server.disconnects_mid_stream == 1, timeout=3)
        await server.wait_for(lambda: server.in_flight == 0)
        assert server.requests_served == 0
    await server.wait_for(lambda: server.connections_open == 0)


async def test_stop_closes_open_streams() -> None:
    srv = FakeOpenAIServer(behaviour=Behaviour(tokens=1000, token_gap=0.05)).start()
    async with (
        httpx.AsyncClient(base_url=srv.base_url) as client,
        client.stream("POST", "/chat/completions", json=chat(stream=True)) as r,
    ):
        lines = r.aiter_lines()
        await anext(lines)
        await asyncio.to_thread(srv.stop)
        with pytest.raises(httpx.RemoteProtocolError):
            async for _ in lines:
                pass
    assert srv.connections_open == 0
    srv.stop()  # idempotent


async def test_wait_for_times_out(server: FakeOpenAIServer) -> None:
    with pytest.raises(TimeoutError):
        await server.wait_for(lambda: False, timeout=0.05)
    with pytest.raises(TimeoutError):
        server.wait_for_sync(lambda: False, timeout=0.05)


# ----- Ollama native API ---------------------------------------------------------------------
def test_ollama_chat_stream_and_not(server: FakeOpenAIServer) -> None:
    server.behaviour.tokens = 4
    with httpx.Client(base_url=server.root_url) as client:
        req = {"model": "fake-model", "messages": MESSAGES}  # stream defaults to true
        with client.stream("POST", "/api/chat", json=req) as r:
            assert r.headers["content-type"] == "application/x-ndjson"
            objs = [json.loads(line) for line in r.iter_lines() if line]
        assert [o["message"]["content"] for o in objs[:-1]] == ["tok "] * 4
        assert all(o["done"] is False and o["model"] == "fake-model" for o in objs[:-1])
        final = objs[-1]
        assert final["done"] is True and final["done_reason"] == "stop"
        assert (final["prompt_eval_count"], final["eval_count"]) == (4, 4)
        assert all(isinstance(final[k], int) for k in ("eval_duration", "total_duration"))

        one = client.post("/api/chat", json=req | {"stream": False}).json()
        assert one["message"] == {"role": "assistant", "content": "tok " * 4}
        assert one["done"] is True and one["eval_count"] == 4

        capped = client.post(
            "/api/chat", json=req | {"stream": False, "options": {"num_predict": 2}}
        )
        assert capped.json()["eval_count"] == 2 and capped.json()["done_reason"] == "length"

        server.fail_next(Failure(status=500))
        assert client.post("/api/chat", json=req).status_code == 500
    assert server.chat_requests == 4


def test_ollama_tags_and_ps(server: FakeOpenAIServer) -> None:
    with httpx.Client(base_url=server.root_url) as client:
        tags = client.get("/api/tags").json()["models"]
        assert [t["name"] for t in tags] == ["fake-model", "other-model"]
        assert all(t["model"] == t["name"] and t["size"] > 0 and t["details"] for t in tags)
        ps = client.get("/api/ps").json()["models"]
        assert len(ps) == 1 and ps[0]["name"] == "fake-model"
        assert ps[0]["size_vram"] > 0 and ps[0]["expires_at"].endswith("Z")


# ----- script mode ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(*args: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    cmd = [sys.executable, str(SCRIPT), "--port", str(port), "-m", "/models/x.gguf", *args]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    return proc, f"http://127.0.0.1:{port}"


def poll_health(client: httpx.Client, url: str, proc: subprocess.Popen[str]) -> list[int]:
    """Polls /health until it says 200; returns the statuses seen."""
    seen: list[int] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(httpx.TransportError):
            seen.append(client.get(f"{url}/health").status_code)
        if seen and seen[-1] == 200:
            return seen
        time.sleep(0.02)
    raise AssertionError(f"never healthy; saw {seen}")


def test_script_mode_startup_and_sigterm() -> None:
    proc, url = spawn("--startup-delay", "0.5", "--models", "a,b", "-ngl", "99")
    try:
        with httpx.Client(timeout=2) as client:
            seen = poll_health(client, url, proc)
            assert seen[0] == 503 and seen[-1] == 200
            models = client.get(f"{url}/v1/models").json()["data"]
            assert [m["id"] for m in models] == ["a", "b"]
        proc.send_signal(signal.SIGTERM)
        _, log = proc.communicate(timeout=5)
        assert proc.returncode == 0
        assert "loading model" in log
        assert f"server listening on {url}" in log
    finally:
        proc.kill()
        proc.communicate()


def test_script_mode_crash_after_requests() -> None:
    proc, url = spawn("--crash-after-requests", "1")
    try:
        with httpx.Client(timeout=2) as client:
            poll_health(client, url, proc)
            req = {"model": "fake-model", "messages": MESSAGES}
            with contextlib.suppress(httpx.TransportError):  # it may die before replying
                client.post(f"{url}/v1/chat/completions", json=req)
        assert proc.wait(timeout=5) != 0
    finally:
        proc.kill()
        proc.communicate()
