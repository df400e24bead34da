"""The response cache: canonical keys, the SQLite store, a real Valkey store, SSE replay."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from muxtui.engine.cache.key import cache_key, canonical_json, wants_cache
from muxtui.engine.cache.redis_store import RedisCache
from muxtui.engine.cache.sqlite_store import SqliteCache
from muxtui.engine.cache.sse import assemble, pieces, replay, replay_chunks
from muxtui.engine.cache.store import NoCache, open_cache
from muxtui.engine.config import ResponseCacheConfig
from muxtui.engine.paths import Paths
from tests.valkey_support import ValkeyServer, valkey  # noqa: F401  (the fixture)

BODY = {
    "model": "alias",
    "messages": [{"role": "user", "content": "héllo"}],
    "temperature": 0,
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"b": 1, "a": 2}}}],
}


def completion(text: str = "the reply text, long enough to need several pieces") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "fake-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12},
    }


# --- keys --------------------------------------------------------------------------------------


def test_key_ignores_field_order_transport_fields_and_the_alias() -> None:
    base = cache_key(BODY, "gguf:abc")
    reordered = dict(reversed(list(BODY.items())))
    reordered["tools"] = [
        {"function": {"parameters": {"a": 2, "b": 1}, "name": "f"}, "type": "function"}
    ]
    assert cache_key(reordered, "gguf:abc") == base
    moved = {**BODY, "model": "other-alias", "stream": True, "user": "u1"}
    moved["stream_options"] = {"include_usage": True}
    assert cache_key(moved, "gguf:abc") == base
    assert cache_key({**BODY, "temperature": 0.0}, "gguf:abc") == base


def test_key_changes_with_the_identity_and_the_body() -> None:
    base = cache_key(BODY, "gguf:abc")
    assert cache_key(BODY, "gguf:abd") != base
    assert cache_key({**BODY, "max_tokens": 5}, "gguf:abc") != base
    assert (
        cache_key({**BODY, "messages": [{"role": "user", "content": "hello"}]}, "gguf:abc") != base
    )


def test_canonical_json_is_json_not_python_repr() -> None:
    text = canonical_json(BODY, "id").decode()
    assert json.loads(text)["body"]["messages"][0]["content"] == "héllo"  # not \u00e9
    assert "héllo" in text and "'" not in text and '"model"' not in text
    assert text == json.dumps(
        json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def test_wants_cache() -> None:
    assert wants_cache({"temperature": 0})
    assert wants_cache({"temperature": 0.0})
    assert wants_cache({"temperature": 0.7, "seed": 1})
    assert not wants_cache({"temperature": 0.7})
    assert not wants_cache({})
    assert not wants_cache({"temperature": False})
    assert wants_cache({"temperature": 1}, "force")
    assert wants_cache({}, " Force ")
    assert not wants_cache({"temperature": 0, "seed": 1}, "no-store")


# --- SQLite ------------------------------------------------------------------------------------


async def test_sqlite_hit_miss_across_instances_and_private_file(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "responses.sqlite3"
    first = SqliteCache(path, ttl=0, max_mb=16)
    assert await first.get("k1") is None
    await first.put("k1", completion())
    assert await first.get("k1") == completion()
    await first.aclose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    second = SqliteCache(path, ttl=0, max_mb=16)  # a fresh process's view: no LRU
    try:
        assert await second.get("k1") == completion()
        assert await second.get("k2") is None
        assert (second.hits, second.misses) == (1, 1)
        assert second.healthy
    finally:
        await second.aclose()


async def test_sqlite_ttl_expires(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "responses.sqlite3"
    cache = SqliteCache(path, ttl=60, max_mb=16)
    await cache.put("k", completion())
    await cache.aclose()
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 61)  # the TTL has passed
    fresh = SqliteCache(path, ttl=60, max_mb=16)
    try:
        assert await fresh.get("k") is None
    finally:
        await fresh.aclose()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 0


async def test_sqlite_size_cap_evicts_the_oldest(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite3"
    cache = SqliteCache(path, ttl=0, max_mb=0.05)  # 52 KB; each reply about 2 KB
    for n in range(60):
        await cache.put(f"k{n}", completion("x" * 2000 + str(n)))
    await cache.aclose()
    with sqlite3.connect(path) as db:
        kept = [row[0] for row in db.execute("SELECT key FROM responses ORDER BY created")]
        total = db.execute("SELECT SUM(size) FROM responses").fetchone()[0]
    assert total <= 0.05 * 2**20
    assert "k59" in kept and "k0" not in kept
    assert kept == [f"k{n}" for n in range(60 - len(kept), 60)]  # the newest ones, in order


async def test_sqlite_unusable_file_skips_the_cache(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = SqliteCache(blocker / "responses.sqlite3", ttl=0, max_mb=1)
    with caplog.at_level(logging.WARNING, logger="muxtui.engine.cache"):
        assert await cache.get("a") is None
        assert await cache.get("b") is None
    await cache.aclose()
    assert not cache.healthy
    assert len([r for r in caplog.records if "uncached" in r.getMessage()]) == 1


async def test_open_cache_follows_the_config(paths: Paths) -> None:
    off = open_cache(ResponseCacheConfig(backend="off"), paths)
    assert isinstance(off, NoCache) and off.backend == "off"
    await off.put("k", completion())
    assert await off.get("k") is None
    sqlite = open_cache(ResponseCacheConfig(), paths)
    assert isinstance(sqlite, SqliteCache) and sqlite.path == paths.response_cache_db
    await sqlite.aclose()
    redis = open_cache(ResponseCacheConfig(backend="redis", url="redis://127.0.0.1:1/0"), paths)
    assert isinstance(redis, RedisCache)
    await redis.aclose()


# --- Redis / Valkey ----------------------------------------------------------------------------


async def test_redis_hit_is_shared_between_two_caches(valkey: ValkeyServer) -> None:  # noqa: F811
    one, two = RedisCache(valkey.url, ttl=60), RedisCache(valkey.url, ttl=60)
    try:
        assert await two.get("shared") is None
        await one.put("shared", completion())
        assert await two.get("shared") == completion()
        assert one.healthy and two.healthy
    finally:
        await one.aclose()
        await two.aclose()
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(valkey.url)
    try:
        ttl = await client.ttl("muxtui:reply:shared")
        stored = await client.get("muxtui:reply:shared")
    finally:
        await client.aclose()
    assert 0 < ttl <= 60
    assert isinstance(stored, bytes)
    assert b" " not in stored.replace(b"the reply text, long enough to need several pieces", b"")


async def test_redis_killed_mid_run_goes_on_then_recovers(
    valkey: ValkeyServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    valkey.password = ""
    cache = RedisCache(valkey.url, ttl=0, retry_s=0.2)
    try:
        await cache.put("before", completion())
        valkey.stop()
        with caplog.at_level(logging.WARNING, logger="muxtui.engine.cache"):
            for n in range(3):
                assert await cache.get(f"missing{n}") is None
                await cache.put(f"after{n}", completion())
        assert not cache.healthy
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and f"127.0.0.1:{valkey.port}" in warnings[0]
        valkey.start()
        for _ in range(100):  # bounded: the retry comes 0.2 s after the failure
            await cache.put("back", completion())
            if cache.healthy:
                break
            await asyncio.sleep(0.05)
        assert cache.healthy
        other = RedisCache(valkey.url, ttl=0)
        try:
            assert await other.get("back") == completion()
        finally:
            await other.aclose()
    finally:
        await cache.aclose()


async def test_redis_password_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = ValkeyServer(tmp_path / "pw", password="s3cret-pass").start()
    try:
        good = RedisCache(server.url, ttl=0)
        await good.put("k", completion())
        other = RedisCache(server.url, ttl=0)
        assert await other.get("k") == completion()
        await other.aclose()
        await good.aclose()
        wrong = RedisCache(server.url.replace("s3cret-pass", "wrong-pass"), ttl=0)
        with caplog.at_level(logging.DEBUG):
            assert await wrong.get("k") is None
        await wrong.aclose()
        assert not wrong.healthy
    finally:
        server.stop()
    text = caplog.text
    assert "wrong-pass" not in text and "s3cret-pass" not in text
    assert f"127.0.0.1:{server.port}" in text


async def test_redis_unreachable_from_the_start(caplog: pytest.LogCaptureFixture) -> None:
    from tests.valkey_support import free_port

    cache = RedisCache(f"redis://user:pw-xyz@127.0.0.1:{free_port()}/0", ttl=10)
    with caplog.at_level(logging.WARNING):
        await cache.put("k", completion())
        assert await cache.get("other") is None
    await cache.aclose()
    assert not cache.healthy
    assert "pw-xyz" not in caplog.text


# --- SSE ---------------------------------------------------------------------------------------


def rich_completion() -> dict[str, Any]:
    return {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "created": 1700000001,
        "model": "m1",
        "system_fingerprint": "fp1",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "First I think about the weather in Paris today.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {
                                "name": "weather",
                                "arguments": '{"city": "Paris, France"}',
                            },
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "time", "arguments": '{"tz": "Europe/Paris"}'},
                        },
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
    }


def parse_sse(frames: list[bytes]) -> list[dict[str, Any]]:
    assert frames[-1] == b"data: [DONE]\n\n"
    chunks = []
    for frame in frames[:-1]:
        assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
        chunks.append(json.loads(frame[6:]))
    return chunks


@pytest.mark.parametrize("make", [completion, rich_completion])
def test_replay_then_assemble_round_trips(make: Any) -> None:
    original = make()
    chunks = parse_sse(list(replay(original)))
    assert len(chunks) >= 5
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == original["id"] for c in chunks)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == original["usage"]
    assert chunks[-2]["choices"][0]["finish_reason"] == original["choices"][0]["finish_reason"]
    assert assemble(chunks) == original
    without = parse_sse(list(replay(original, include_usage=False)))
    assert without == chunks[:-1]


def test_content_streams_in_several_pieces() -> None:
    text = completion()["choices"][0]["message"]["content"]
    content = [
        c["choices"][0]["delta"]["content"]
        for c in replay_chunks(completion())
        if c["choices"] and c["choices"][0]["delta"].get("content")
    ]
    assert len(content) >= 3 and "".join(content) == text
    assert pieces("") == [] and "".join(pieces("a" * 100)) == "a" * 100


def delta(**fields: Any) -> dict[str, Any]:
    return {"id": "x", "choices": [{"index": 0, "delta": fields}]}


def test_assemble_merges_a_servers_stream() -> None:
    call = {"index": 0, "id": "c1", "type": "function"}
    stream = [
        {**delta(role="assistant"), "created": 5, "model": "m"},
        delta(reasoning_content="hm"),
        delta(content="Hel"),
        delta(content="lo", tool_calls=[{**call, "function": {"name": "f", "arguments": '{"a"'}}]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": ": 1}"}}]),
        {"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"id": "x", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}},
    ]
    whole = assemble(stream)
    message = whole["choices"][0]["message"]
    assert message["content"] == "Hello" and message["reasoning_content"] == "hm"
    assert message["tool_calls"] == [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    ]
    assert whole["choices"][0]["finish_reason"] == "tool_calls"
    assert whole["usage"] == {"prompt_tokens": 1, "completion_tokens": 2}
    assert (whole["id"], whole["created"], whole["model"]) == ("x", 5, "m")


async def test_the_openai_client_reads_a_replayed_stream() -> None:
    """The real `openai` package, streaming a replay served over loopback HTTP, gets it all."""
    import openai

    from tests.fake_server import Failure, FakeOpenAIServer

    original = rich_completion()
    original["choices"][0]["message"]["content"] = "Checking both, one moment please."
    with FakeOpenAIServer() as server:
        sse = b"".join(replay(original))
        server.fail_next(Failure(body=sse, content_type="text/event-stream"))
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        try:
            stream = await client.chat.completions.create(
                model="fake-model",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk.model_dump(exclude_unset=True) async for chunk in stream]
        finally:
            await client.close()
    assert len(chunks) >= 8
    assert assemble(chunks) == original
