"""Conversations in SQLite: round trips, cut-off replies, ordering, and the file itself."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from muxtui.engine.config import Config, ModelConfig, ProviderConfig
from muxtui.engine.core import Engine
from muxtui.engine.errors import MuxtuiError, SettingsError
from muxtui.engine.events import ChatFinished, ChatMessage, ChatSettings, ChatStats
from muxtui.engine.history import History
from muxtui.engine.history_schema import MIGRATIONS
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


# --- schema migrations -------------------------------------------------------------------------

# The schema as the first muxtui wrote it (user_version 1), kept verbatim.
SCHEMA_V1 = """
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY, title TEXT NOT NULL DEFAULT '', model TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL, content TEXT NOT NULL, model TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'complete', error TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL, provider TEXT, prompt_tokens INTEGER, completion_tokens INTEGER,
    ttft_s REAL, tokens_per_s REAL, total_s REAL
);
CREATE INDEX messages_by_conversation ON messages (conversation_id, id);
CREATE INDEX conversations_by_update ON conversations (updated_at);
INSERT INTO conversations VALUES (7, 'old chat', 'm', 1.0, 2.0);
INSERT INTO messages VALUES (1, 7, 'user', 'hello from v1', '', 'complete', '', 1.0,
    NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO messages VALUES (2, 7, 'assistant', 'half a repl', 'm', 'error', 'fake: broke', 2.0,
    'fake', 3, 4, 0.5, 8.0, 1.0);
PRAGMA user_version = 1;
"""


async def test_a_version_1_file_gains_the_new_columns_and_keeps_its_data(paths: Paths) -> None:
    paths.data_dir.mkdir(parents=True)
    with sqlite3.connect(paths.history_db) as db:
        db.executescript(SCHEMA_V1)
    store = History(paths.history_db)
    await store.open()
    try:
        [conversation] = await store.list_conversations()
        assert (conversation.id, conversation.title, conversation.message_count) == (
            7,
            "old chat",
            2,
        )
        user, reply = await store.messages(7)
        assert (user.content, reply.content, reply.status, reply.error) == (
            "hello from v1",
            "half a repl",
            "error",
            "fake: broke",
        )
        assert reply.stats is not None and reply.stats.completion_tokens == 4
        assert reply.finish_reason == ""
        assert await store.settings(7) == ChatSettings()
        await store.save_settings(7, ChatSettings("be brief", 0.3, 64))
        assert await store.settings(7) == ChatSettings("be brief", 0.3, 64)
    finally:
        await store.close()
    with sqlite3.connect(paths.history_db) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (MIGRATIONS[-1][0],)


async def test_reopening_applies_nothing_twice(history: History, paths: Paths) -> None:
    chat = await history.new_conversation("kept", "m", ChatSettings(temperature=1.5))
    await history.close()
    again = History(paths.history_db)
    await again.open()
    try:
        assert await again.settings(chat.id) == ChatSettings(temperature=1.5)
    finally:
        await again.close()


async def test_a_file_from_a_newer_muxtui_is_refused_untouched(paths: Paths) -> None:
    paths.data_dir.mkdir(parents=True)
    with sqlite3.connect(paths.history_db) as db:
        db.execute("PRAGMA user_version = 99")
    before = paths.history_db.read_bytes()
    store = History(paths.history_db)
    with pytest.raises(MuxtuiError, match=r"newer muxtui \(schema 99, this one knows \d+\)"):
        await store.open()
    await store.close()
    assert paths.history_db.read_bytes() == before


# --- settings and search -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"temperature": 2.5}, "temperature must be between 0 and 2, not 2.5"),
        ({"temperature": -0.1}, "temperature must be between 0 and 2, not -0.1"),
        ({"max_tokens": 0}, "max tokens must be a whole number, 1 or more, not 0"),
    ],
)
def test_settings_out_of_range_say_the_range(settings: dict[str, float], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        ChatSettings(**settings)  # type: ignore[arg-type]
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)


async def test_search_matches_titles_and_messages_and_escapes_wildcards(
    history: History,
) -> None:
    tea = await history.new_conversation("Tea", "m")
    await history.add_message(tea.id, "user", "How long to steep GREEN tea?")
    coffee = await history.new_conversation("Coffee 100%", "m")
    await history.add_message(coffee.id, "user", "espresso_ratio")
    assert [c.id for c in await history.search_conversations("green")] == [tea.id]
    assert [c.id for c in await history.search_conversations("100%")] == [coffee.id]
    assert [c.id for c in await history.search_conversations("o_r")] == [coffee.id]
    assert [c.id for c in await history.search_conversations("%")] == [coffee.id]
    assert [c.id for c in await history.search_conversations("e")] == [coffee.id, tea.id]
    assert [c.id for c in await history.list_conversations(limit=1)] == [coffee.id]


async def test_text_with_lone_surrogates_is_stored_as_replacement_characters(
    history: History,
) -> None:
    chat = await history.new_conversation("bad \udcff title", "m")
    await history.add_message(chat.id, "user", "caf\udce9", error="x\ud800")
    [message] = await history.messages(chat.id)
    assert (message.content, message.error) == ("caf\ufffd", "x\ufffd")
    assert (await history.list_conversations())[0].title == "bad \ufffd title"


# --- the files -----------------------------------------------------------------------------


async def test_wal_files_are_private_under_umask_022_in_an_open_folder(paths: Paths) -> None:
    paths.data_dir.mkdir(parents=True)
    paths.data_dir.chmod(0o755)
    old_umask = os.umask(0o022)
    store = History(paths.history_db)
    try:
        await store.open()
        chat = await store.new_conversation("x")
        await store.add_message(chat.id, "user", "private words")
        names = sorted(os.listdir(paths.data_dir))
        modes = {name: stat.S_IMODE((paths.data_dir / name).stat().st_mode) for name in names}
    finally:
        os.umask(old_umask)
        await store.close()
    assert names == ["history.sqlite3", "history.sqlite3-shm", "history.sqlite3-wal"]
    assert set(modes.values()) == {0o600}, modes
    assert stat.S_IMODE(paths.data_dir.stat().st_mode) == 0o700


async def test_a_folder_in_place_of_the_file_says_move_it_aside(paths: Paths) -> None:
    paths.history_db.mkdir(parents=True)
    store = History(paths.history_db)
    with pytest.raises(MuxtuiError) as caught:
        await store.open()
    await store.close()
    assert str(caught.value) == (
        f"history: {paths.history_db} is a folder, not the history file; move it aside, "
        "or set XDG_DATA_HOME to a writable folder"
    )


async def test_reading_a_conversation_again_sees_every_change_made_since(
    history: History, paths: Paths
) -> None:
    chat = await history.new_conversation("kept", "m")
    for text in ("one", "two"):
        await history.add_message(chat.id, "user", text)
    assert [m.content for m in await history.messages(chat.id)] == ["one", "two"]
    assert [m.content for m in await history.messages(chat.id, newest=1)] == ["two"]

    await history.add_message(chat.id, "assistant", "three", model="m")
    # Written by another process (`muxtui ask -c` while the app runs): seen too.
    other = sqlite3.connect(paths.history_db, isolation_level=None)
    try:
        other.execute(
            "INSERT INTO messages (conversation_id, role, content, model, status, error, "
            "created_at) VALUES (?, 'user', 'four', '', 'complete', '', 0)",
            (chat.id,),
        )
    finally:
        other.close()
    assert [m.content for m in await history.messages(chat.id)] == ["one", "two", "three", "four"]

    # Deleted and made again: the ids may be the same ones; the text is the new.
    await history.delete(chat.id)
    assert await history.messages(chat.id) == []
    again = await history.new_conversation("again", "m")
    for text in ("uno", "dos"):
        await history.add_message(again.id, "user", text)
    assert [m.content for m in await history.messages(again.id)] == ["uno", "dos"]
