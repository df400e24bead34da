"""Pilot tests of the chat pane against the real engine and the loopback test server."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.widgets import Label

from muxtui.engine.config import load_config
from muxtui.tui.panes.chat.conversation_list import ConversationList
from muxtui.tui.panes.chat.message_view import MessageView
from muxtui.tui.widgets.pane_tabs import PaneTabs
from tests.fake_server import FakeOpenAIServer
from tests.long_history import add_conversation
from tests.test_tui_support import (
    chat_pane,
    local_entry,
    make_app,
    provider_config,
    reply_done,
    send_prompt,
    started,
    wait_until,
    without_local_extra,
)

WriteConfig = Callable[[str], Path]


def views(app: object) -> list[MessageView]:
    """The mounted message views, oldest first."""
    return list(app.query(MessageView))  # type: ignore[attr-defined]


async def test_prompt_streams_reply_renders_it_and_stores_it(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    fake_server.behaviour.tokens = 6
    app = make_app(write_config(provider_config(fake_server.base_url)))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        await send_prompt(pilot, "hello model", type_keys=True)
        await reply_done(pilot)

        user, reply = views(app)
        assert user.message.role == "user" and user.text == "hello model"
        assert reply.message.role == "assistant"
        assert reply.message.status == "complete"
        assert reply.text == "tok " * 6
        rendered = reply.body.source
        assert rendered == "tok " * 6
        footer = str(reply.query_one(".message-footer").render())
        assert "fake" in footer and "6 tokens" in footer and "TTFT" in footer

        history = app.engine.history
        (conversation,) = await history.list_conversations()
        assert conversation.title == "hello model"
        stored = await history.messages(conversation.id)
        assert [(m.role, m.content, m.status) for m in stored] == [
            ("user", "hello model", "complete"),
            ("assistant", "tok " * 6, "complete"),
        ]
        assert stored[1].stats is not None and stored[1].stats.completion_tokens == 6
        assert fake_server.chat_requests == 1
        sent = fake_server.requests[-1].json
        assert sent["messages"] == [{"role": "user", "content": "hello model"}]

        await pilot.press("ctrl+r")
        assert app.clipboard == "tok " * 6


async def test_escape_mid_stream_stops_and_keeps_the_partial_reply(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    fake_server.behaviour.tokens = 400
    fake_server.behaviour.token_gap = 0.05
    app = make_app(write_config(provider_config(fake_server.base_url)))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        await send_prompt(pilot, "tell me a long story")
        reply = views(app)[-1]
        await wait_until(pilot, lambda: reply.text.count("tok") >= 3, "some streamed text")
        await pilot.press("escape")
        await reply_done(pilot)

        assert reply.message.status == "stopped"
        partial = reply.text
        assert 3 <= partial.count("tok") < 400
        assert "stopped" in str(reply.query_one(".message-footer").render())
        history = app.engine.history
        (conversation,) = await history.list_conversations()
        stored = await history.messages(conversation.id)
        assert stored[-1].role == "assistant"
        assert stored[-1].status == "stopped"
        assert stored[-1].content.startswith(partial)
        await fake_server.wait_for(lambda: fake_server.in_flight == 0)
        assert fake_server.disconnects_mid_stream == 1

        # The stopped reply stays part of the conversation sent with the next prompt.
        fake_server.behaviour.tokens = 2
        fake_server.behaviour.token_gap = 0.0
        await send_prompt(pilot, "go on")
        await reply_done(pilot)
        roles = [m["role"] for m in fake_server.requests[-1].json["messages"]]
        assert roles == ["user", "assistant", "user"]


async def test_switching_conversations_restores_them(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    app = make_app(write_config(provider_config(fake_server.base_url)))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        await send_prompt(pilot, "first topic")
        await reply_done(pilot)
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert views(app) == []
        fake_server.behaviour.tokens = 3
        await send_prompt(pilot, "second topic")
        await reply_done(pilot)

        conversations = app.query_one(ConversationList)
        assert conversations.option_count == 2
        conversations.focus()
        await pilot.pause()
        # Newest first: the first conversation is the second option.
        conversations.highlighted = 1
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(views(app)) == 2, "the first conversation")
        assert [v.text for v in views(app)] == ["first topic", "tok " * 5]
        assert app.sub_title == "first topic"

        conversations.focus()
        conversations.highlighted = 0
        await pilot.press("enter")
        await wait_until(
            pilot, lambda: [v.text for v in views(app)][:1] == ["second topic"], "the second one"
        )
        assert [v.text for v in views(app)] == ["second topic", "tok " * 3]

        # Continuing the restored conversation sends its earlier turns along.
        await send_prompt(pilot, "more")
        await reply_done(pilot)
        contents = [m["content"] for m in fake_server.requests[-1].json["messages"]]
        assert contents == ["second topic", "tok " * 3, "more"]


async def test_rename_and_delete_a_conversation(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    app = make_app(write_config(provider_config(fake_server.base_url)))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        await send_prompt(pilot, "old title")
        await reply_done(pilot)
        conversations = app.query_one(ConversationList)
        conversations.focus()
        conversations.highlighted = 0
        await pilot.press("r")
        await pilot.pause()
        await pilot.press("ctrl+u", *"new title", "enter")
        await wait_until(
            pilot,
            lambda: str(conversations.get_option_at_index(0).prompt).startswith("new title "),
            "the renamed conversation",
        )
        (conversation,) = await app.engine.history.list_conversations()
        assert conversation.title == "new title"
        assert app.sub_title == "new title"

        conversations.focus()
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("y")
        await wait_until(pilot, lambda: conversations.option_count == 0, "the deletion")
        assert await app.engine.history.list_conversations() == []
        assert views(app) == []


async def test_empty_prompt_and_bad_settings_are_explained_in_the_pane(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    app = make_app(write_config(provider_config(fake_server.base_url)))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        await send_prompt(pilot, "   ")
        note = app.query_one("#chat-note")
        assert note.display and "Type a message first" in str(note.render())

        await pilot.press("ctrl+s")
        await pilot.pause()
        app.query_one("#temperature").focus()
        await pilot.press(*"7")
        await send_prompt(pilot, "hi")
        assert "temperature" in str(note.render()) and "0 to 2" in str(note.render())
        assert fake_server.chat_requests == 0


async def test_unreachable_provider_shows_the_error_inline_and_stores_it(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_local_extra(monkeypatch)  # else the app starts on the bundled model, which answers
    closed = FakeOpenAIServer().start()
    base_url = closed.base_url
    closed.stop()  # nothing listens on this port any more
    app = make_app(write_config(provider_config(base_url)))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        await send_prompt(pilot, "anyone there?")
        await reply_done(pilot)
        reply = views(app)[-1]
        assert reply.message.status == "error"
        footer = str(reply.query_one(".message-footer").render())
        assert "fake" in footer
        (conversation,) = await app.engine.history.list_conversations()
        stored = await app.engine.history.messages(conversation.id)
        assert stored[-1].status == "error" and stored[-1].error


async def test_model_picker_fuzzy_search_and_last_model_saved(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    config_file = write_config(
        provider_config(fake_server.base_url, models=("alpha", "llama-small", "zeta"))
    )
    app = make_app(config_file)
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        assert chat_pane(app).current_model == "alpha"
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: bool(app.screen.query("#picker-search")), "the picker")
        await pilot.press(*"lsm", "enter")
        await wait_until(pilot, lambda: chat_pane(app).current_model == "llama-small", "the pick")
        await send_prompt(pilot, "hi")
        await reply_done(pilot)
        (conversation,) = await app.engine.history.list_conversations()
        assert conversation.model == "llama-small"
    assert load_config(config_file).ui.last_model == "llama-small"

    again = make_app(config_file)
    async with again.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        assert chat_pane(again).current_model == "llama-small"


async def test_theme_switch_persists_across_restarts(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    config_file = write_config(provider_config(fake_server.base_url))
    app = make_app(config_file)
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        assert app.theme == "muxtui-dark"
        await pilot.press("ctrl+t")
        await pilot.pause()
        await pilot.press(*"muxtui-light")
        await wait_until(
            pilot,
            lambda: app.screen.query("CommandList").first().option_count == 1,
            "one matching theme",
        )
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.theme == "muxtui-light", "the theme to change")
    assert load_config(config_file).ui.theme == "muxtui-light"
    assert config_file.stat().st_mode & 0o777 == 0o600

    again = make_app(config_file)
    async with again.run_test(size=(120, 40)) as pilot:
        assert again.theme == "muxtui-light"


async def test_keys_are_remapped_from_the_config(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    extra = '[ui.keys]\npane-models = "f9"\nnew-chat = "ctrl+b"\n'
    app = make_app(write_config(provider_config(fake_server.base_url, extra=extra)))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        hint = app.query_one("#sidebar .hint.-unfocused", Label)
        assert str(hint.render()) == "^l pick · ^b new"
        tabs = app.query_one(PaneTabs)
        assert "Models F9" in str(tabs.render())
        await send_prompt(pilot, "one")
        await reply_done(pilot)
        await pilot.press("ctrl+b")
        await wait_until(pilot, lambda: views(app) == [], "the new chat")
        await pilot.press("f3")  # no longer bound
        await pilot.pause()
        assert app.active_pane == "chat"
        await pilot.press("f9")
        await pilot.pause()
        assert app.active_pane == "models"


async def test_first_run_with_nothing_configured_explains_what_to_do(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_local_extra(monkeypatch)
    app = make_app(write_config("[network]\ndiscovery = false\n"))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        await wait_until(pilot, lambda: not chat_pane(app).discovering, "discovery to end")
        empty_state = app.query_one("#empty-state")
        assert empty_state.display
        text = str(empty_state.render())
        assert "[providers.openrouter]" in text
        assert "muxtui config --path" in text
        assert "pip install 'muxtui[local]'" in text
        await send_prompt(pilot, "hello?")
        assert "No model to send to yet" in str(app.query_one("#chat-note").render())
        assert await app.engine.history.list_conversations() == []


async def test_long_chats_mount_a_bounded_window_and_send_everything(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    from muxtui.tui.panes.chat.chat_log import MOUNTED_AT_MOST, ChatLog

    app = make_app(write_config(provider_config(fake_server.base_url)))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        count = MOUNTED_AT_MOST + 10
        conversation_id = add_conversation(
            app.engine.paths.history_db, "long", count, lambda i: f"message {i}"
        )
        log = app.query_one(ChatLog)
        await chat_pane(app).open_conversation(conversation_id)
        await wait_until(pilot, lambda: log.is_settled, "the log to settle")
        shown = views(app)
        assert 0 < len(shown) <= MOUNTED_AT_MOST
        assert shown[-1].text == f"message {count - 1}"
        earlier = count - len(shown)
        assert f"↑ {earlier} earlier messages" in str(app.query_one("#more-above").render())
        # The whole conversation still goes to the model (this one has no context limit).
        await send_prompt(pilot, "and now?")
        await reply_done(pilot)
        sent = fake_server.requests[-1].json["messages"]
        assert len(sent) == count + 1 and sent[0]["content"] == "message 0"
        assert len(views(app)) <= MOUNTED_AT_MOST


async def test_cold_local_model_shows_its_start_then_answers(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    config = provider_config(
        fake_server.base_url,
        models=(),
        extra=local_entry("tiny", args="--startup-delay 1.6 --tokens 3"),
    )
    app = make_app(write_config(config))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        assert chat_pane(app).current_model == "tiny"
        await send_prompt(pilot, "wake up")
        reply = views(app)[-1]
        statuses: set[str] = set()

        def note_status() -> bool:
            footer = reply.query_one(".message-footer")
            if footer.display and "-status" in footer.classes:
                statuses.add(str(footer.render()))
            return chat_pane(app).turn is None

        await wait_until(pilot, note_status, "the local reply", timeout=30)
        assert reply.message.status == "complete"
        assert reply.text == "tok " * 3
        # The phase and progress in words; the raw log lines stay in the Models pane.
        assert "starting tiny…" in statuses, statuses
        assert any(re.fullmatch(r"starting tiny… loading model \d+%", s) for s in statuses)
        assert not any("fake server" in s or "'fake-model'" in s for s in statuses), statuses
        stored = await app.engine.history.messages(
            (await app.engine.history.list_conversations())[0].id
        )
        assert stored[-1].model == "tiny" and stored[-1].status == "complete"


async def test_engine_that_cannot_start_is_explained_not_a_crash(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    app = make_app(write_config(provider_config(fake_server.base_url)))
    app.paths.history_db.mkdir(parents=True)  # a folder where the history file should be
    async with app.run_test(size=(120, 40)) as pilot:
        note = app.query_one("#chat-note")
        await wait_until(pilot, lambda: bool(note.display), "the engine error")
        assert "could not start" in str(note.render())
        assert "move it aside" in str(note.render())
        await send_prompt(pilot, "hello")
        assert "could not start" in str(note.render())
        assert fake_server.chat_requests == 0
