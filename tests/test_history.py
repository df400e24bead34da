"""Conversations in SQLite: round trips, cut-off replies, ordering, and the file itself."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from muxtui.engine.config import Config, ModelConfig, ProviderConfig
from muxtui.engine.core import Engine
from muxtui.engine.errors import MuxtuiError
from muxtui.engine.events import ChatFinished, ChatMessage, ChatStats
from muxtui.engine.history import History
from muxtui.engine.paths import Paths
from tests.fake_server import FakeOpenAIServer

STATS = ChatStats(
    model="m",
    provider="fake",
    prompt_tokens=3,
    completion_tokens=5,
    ttft_s=0.25,
    tokens_per_s=42.5,
    total_s=1.5,
)


@pytest.fixture
async def history(paths: Paths) -> AsyncIterator[History]:
    store = History(paths.history_db)
    await store.open()
    yield store
    await store.close()


async def test_round_trip_with_a_stopped_partial_reply(history: History, paths: Paths) -> None:
    chat = await history.new_conversation("First chat", "m")
    await history.add_message(chat.id, "system", "be brief")
    await history.add_message(chat.id, "user", "hi")
    await history.add_message(chat.id, "assistant", "hello!", model="m", stats=STATS)
    await history.add_message(chat.id, "user", "tell me more")
    stopped = await history.add_message(
        chat.id, "assistant", "well, it", model="m", status="stopped"
    )
    await history.close()

    reopened = History(paths.history_db)
    await reopened.open()
    try:
        messages = await reopened.messages(chat.id)
        conversations = await reopened.list_conversations()
    finally:
        await reopened.close()
    assert [(m.role, m.content, m.status) for m in messages] == [
        ("system", "be brief", "complete"),
        ("user", "hi", "complete"),
        ("assistant", "hello!", "complete"),
        ("user", "tell me more", "complete"),
        ("assistant", "well, it", "stopped"),
    ]
    assert messages[2].stats == STATS
    assert messages[1].stats is None
    assert messages[-1].id == stopped
    assert [m.as_chat() for m in messages[:2]] == [
        ChatMessage("system", "be brief"),
        ChatMessage("user", "hi"),
    ]
    assert len(conversations) == 1
    assert (conversations[0].title, conversations[0].model) == ("First chat", "m")
    assert conversations[0].message_count == 5


async def test_a_reply_is_updated_as_it_finishes_or_fails(history: History) -> None:
    chat = await history.new_conversation("c", "m")
    reply = await history.add_message(chat.id, "assistant", "", model="m", status="stopped")
    await history.update_message(reply, content="partial", status="error", error="fake: broke")
    [stored] = await history.messages(chat.id)
    assert (stored.content, stored.status, stored.error) == ("partial", "error", "fake: broke")
    await history.update_message(reply, content="whole", status="complete", stats=STATS, error="")
    [stored] = await history.messages(chat.id)
    assert (stored.content, stored.status, stored.error, stored.stats) == (
        "whole",
        "complete",
        "",
        STATS,
    )


async def test_conversations_list_most_recent_first_and_rename_and_delete(
    history: History,
) -> None:
    old = await history.new_conversation("old", "a")
    new = await history.new_conversation("new", "b")
    await history.add_message(old.id, "user", "bump")  # activity moves it to the top
    assert [c.title for c in await history.list_conversations()] == ["old", "new"]
    await history.rename(new.id, "renamed")
    await history.set_model(new.id, "c")
    fetched = await history.get_conversation(new.id)
    assert fetched is not None and (fetched.title, fetched.model) == ("renamed", "c")
    await history.delete(old.id)
    assert [c.title for c in await history.list_conversations()] == ["renamed"]
    assert await history.messages(old.id) == []
    assert await history.get_conversation(old.id) is None


async def test_a_message_for_a_deleted_conversation_is_a_lookup_error(history: History) -> None:
    chat = await history.new_conversation()
    await history.delete(chat.id)
    with pytest.raises(LookupError):
        await history.add_message(chat.id, "user", "hi")
    with pytest.raises(ValueError):
        await history.add_message(chat.id, "user", "hi", status="half")  # type: ignore[arg-type]


async def test_the_file_is_private_and_in_wal_mode(history: History, paths: Paths) -> None:
    await history.new_conversation("x")
    assert paths.history_db.exists()
    assert stat.S_IMODE(paths.history_db.stat().st_mode) == 0o600
    with sqlite3.connect(paths.history_db) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_using_history_before_open_is_a_clear_error(paths: Paths) -> None:
    with pytest.raises(RuntimeError, match="not open"):
        await History(paths.history_db).list_conversations()


async def test_a_corrupt_file_names_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    path.write_bytes(b"this is not a database, it is a text file " * 100)
    store = History(path)
    with pytest.raises(MuxtuiError, match="move it aside"):
        await store.open()
    await store.close()


async def test_api_keys_never_reach_the_history_file(paths: Paths) -> None:
    secret = "sk-history-must-not-hold-this"
    with FakeOpenAIServer() as server:
        config = Config(
            providers={"fake": ProviderConfig(base_url=server.base_url, api_key=secret)},
            models={"m": ModelConfig(provider="fake", id="fake-model")},
        )
        async with Engine(config, paths, discover=False) as engine:
            chat = await engine.history.new_conversation("keys", "m")
            await engine.history.add_message(chat.id, "user", "hi")
            events = [e async for e in engine.chat("m", [ChatMessage("user", "hi")])]
            finished = events[-1]
            assert isinstance(finished, ChatFinished)
            await engine.history.add_message(
                chat.id, "assistant", finished.text, model="m", stats=finished.stats
            )
    stored = b"".join(p.read_bytes() for p in paths.data_dir.iterdir() if p.is_file())
    assert b"tok tok" in stored
    assert secret.encode() not in stored
