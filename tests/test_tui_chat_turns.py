"""Pilot tests of what a turn shows and keeps: settings kept per conversation across restarts,
how a reply ended (truncated, refused), "tokens" only when the server counted them, the
context notice and gauge, the starting model and why, wide code at 80 columns."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from textual.widgets import Input, Static
from textual.widgets._markdown import MarkdownFence

from muxtui.engine.events import ChatSettings as TurnSettings
from muxtui.tui.panes.chat.chat_log import ChatLog
from muxtui.tui.panes.chat.chat_settings import ChatSettings
from muxtui.tui.panes.chat.model_bar import ModelBar
from muxtui.tui.panes.chat.prompt_input import PromptInput
from tests.fake_server import Failure, FakeOpenAIServer
from tests.long_history import add_conversation
from tests.test_tui_chat import views
from tests.test_tui_support import (
    chat_pane,
    make_app,
    provider_config,
    reply_done,
    send_prompt,
    started,
    wait_until,
)

WriteConfig = Callable[[str], Path]


async def test_settings_are_kept_with_their_conversation_across_a_restart(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    config_file = write_config(provider_config(fake_server.base_url))
    app = make_app(config_file)
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: bool(app.query("#system-prompt")), "the settings")
        await pilot.press(*"be brief")
        app.query_one("#temperature").focus()
        await pilot.press(*"0.3")
        app.query_one("#max-tokens").focus()
        await pilot.press(*"64")
        await send_prompt(pilot, "first")
        await reply_done(pilot)
        sent = fake_server.requests[-1].json
        assert sent["messages"][0] == {"role": "system", "content": "be brief"}
        assert sent["temperature"] == 0.3 and sent["max_tokens"] == 64
        conversation_id = chat_pane(app).conversation_id
        assert conversation_id is not None

        # Changed without sending: kept once the typing pauses.
        app.query_one("#temperature").focus()  # selects what is there: typing replaces it
        await pilot.press(*"0.5")
        wanted = TurnSettings("be brief", 0.5, 64)
        engine = app.engine
        for _ in range(200):
            if await engine.conversation_settings(conversation_id) == wanted:
                break
            await pilot.pause(0.02)
        assert await engine.conversation_settings(conversation_id) == wanted

        # A rejected value says the range and is not kept.
        app.query_one("#max-tokens").focus()
        await pilot.press("ctrl+u", "0")
        problem = app.query_one("#settings-problem", Static)
        await wait_until(pilot, lambda: bool(problem.display), "the problem")
        assert "max tokens '0' must be a whole number above 0" in str(problem.render())
        await pilot.pause(0.6)
        assert await engine.conversation_settings(conversation_id) == wanted

    again = make_app(config_file)
    async with again.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        settings = again.query_one(ChatSettings)
        assert settings.settings() == TurnSettings()  # a new chat starts with none
        await pilot.press("ctrl+l", "enter")
        await wait_until(
            pilot, lambda: chat_pane(again).conversation_id == conversation_id, "the open"
        )
        assert settings.settings() == wanted
        assert "system prompt, temperature 0.5, max 64 tokens" in str(
            again.query_one("#settings-title").render()
        )
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: bool(again.query("#system-prompt")), "the settings")
        values = [
            again.query_one(f"#{name}", Input).value
            for name in ("system-prompt", "temperature", "max-tokens")
        ]
        assert values == ["be brief", "0.5", "64"]


async def test_a_reply_cut_off_by_the_server_is_kept_and_marked_truncated(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    fake_server.behaviour.tokens = 10
    fake_server.fail_next(Failure(end_after_tokens=3))
    app = make_app(write_config(provider_config(fake_server.base_url)))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        await send_prompt(pilot, "go")
        await reply_done(pilot)
        reply = views(app)[-1]
        assert reply.message.status == "truncated" and reply.text == "tok " * 3
        footer = reply.query_one(".message-footer", Static)
        assert "-truncated" in footer.classes and "truncated" in str(footer.render())
        (conversation,) = await app.engine.list_conversations()
        stored = await app.engine.conversation_messages(conversation.id)
        assert [(m.status, m.content) for m in stored] == [
            ("complete", "go"),
            ("truncated", "tok " * 3),
        ]


def sse(*chunks: dict[str, object]) -> bytes:
    return b"".join(b"data: " + json.dumps(chunk).encode() + b"\n\n" for chunk in chunks) + (
        b"data: [DONE]\n\n"
    )


async def test_reply_size_says_tokens_only_when_the_server_counted_them(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    uncounted = sse(
        *({"choices": [{"index": 0, "delta": {"content": text}}]} for text in ("a ", "b ", "c")),
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    )
    fake_server.fail_next(Failure(body=uncounted, content_type="text/event-stream"))
    fake_server.behaviour.tokens = 4
    app = make_app(write_config(provider_config(fake_server.base_url)))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        await send_prompt(pilot, "no usage")
        await reply_done(pilot)
        footer = str(views(app)[-1].query_one(".message-footer").render())
        assert "3 chunks" in footer and "tokens" not in footer and "tok/s" not in footer
        await send_prompt(pilot, "with usage")
        await reply_done(pilot)
        footer = str(views(app)[-1].query_one(".message-footer").render())
        assert "4 tokens" in footer and "chunks" not in footer

        # Reopened from the history: still no claim of tokens for the uncounted reply.
        conversation_id = chat_pane(app).conversation_id
        assert conversation_id is not None
        await pilot.press("ctrl+n")
        await chat_pane(app).open_conversation(conversation_id)
        await wait_until(pilot, lambda: len(views(app)) == 4, "the conversation")
        footers = [str(view.query_one(".message-footer").render()) for view in views(app)]
        assert "tokens" not in footers[1] and "4 tokens" in footers[3]


async def test_context_notice_above_the_reply_and_the_gauge(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    fake_server.behaviour.context_limit = 512
    fake_server.behaviour.tokens = 4
    app = make_app(write_config(provider_config(fake_server.base_url)))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        text = "word " * 20
        conversation_id = add_conversation(
            app.engine.paths.history_db, "long", 200, lambda i: f"{i} {text}"
        )
        await chat_pane(app).open_conversation(conversation_id)
        bar = app.query_one(ModelBar)
        assert bar.context is None
        await send_prompt(pilot, "and now?")
        await reply_done(pilot)
        notice = views(app)[-1].query_one(".message-notice", Static)
        line = str(notice.render())
        assert line.endswith("earlier messages not sent: fake has 512 tokens"), line
        omitted = int(line.split()[0].replace(",", ""))
        assert 150 < omitted < 200
        assert bar.context is not None
        fill, figures = bar.context
        assert 0 < fill <= 1 and figures.endswith("of 512 tokens")
        assert "context" in str(bar.render())
        # The last chat request (the reply's own text is tokenized after it, for the next turn).
        chats = [r for r in fake_server.requests if r.path.endswith("/chat/completions")]
        sent = chats[-1].json["messages"]
        assert len(sent) == 200 - omitted + 1 and sent[-1]["content"] == "and now?"


async def test_the_app_starts_on_the_engines_default_model_and_says_why(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    closed = FakeOpenAIServer().start()
    dead_url = closed.base_url
    closed.stop()
    config = (
        f'[providers.down]\nkind = "openai"\nbase_url = "{dead_url}"\n\n'
        f'[providers.up]\nkind = "openai"\nbase_url = "{fake_server.base_url}"\n\n'
        '[models.dead]\nprovider = "down"\n\n[models.alive]\nprovider = "up"\n\n'
        '[network]\ndiscovery = false\nretries = 0\n\n[ui]\nlast_model = "dead"\n'
    )
    app = make_app(write_config(config))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        bar = app.query_one(ModelBar)
        await wait_until(pilot, lambda: bar.model == "alive", "the default model", timeout=15)
        assert bar.reason and "dead" in bar.reason
        assert f"Started on alive: {bar.reason}" in str(bar.tooltip)


async def test_a_turn_refused_before_anything_is_kept_puts_the_prompt_back(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    broken = "[local.broken]\ncmd = '/nonexistent/llama-server --port {port}'\n"
    app = make_app(write_config(provider_config(fake_server.base_url, models=(), extra=broken)))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        assert chat_pane(app).current_model == "broken"
        await send_prompt(pilot, "hello there")
        await reply_done(pilot)
        note = str(app.query_one("#chat-note").render())
        assert note.startswith("Not sent: ") and "broken" in note and "\n" not in note
        assert app.query_one(PromptInput).text == "hello there"
        assert views(app) == [] and app.query_one("#empty-state").display
        assert await app.engine.list_conversations() == []


async def test_wide_code_at_80_columns_scrolls_sideways_with_a_scrollbar(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    wide = "x = call(" + ", ".join(f"argument_{n}" for n in range(12)) + ")"
    reply = f"Wide:\n\n```python\n{wide}\n```\n\nNarrow:\n\n```python\ny = 1\n```\n"
    app = make_app(write_config(provider_config(fake_server.base_url)))
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        conversation_id = add_conversation(
            app.engine.paths.history_db, "code", 2, lambda i: "show code" if i == 0 else reply
        )
        await chat_pane(app).open_conversation(conversation_id)
        log = app.query_one(ChatLog)
        await wait_until(pilot, lambda: log.is_settled and bool(app.query(MarkdownFence)), "code")
        await pilot.pause()
        wide_fence, narrow_fence = app.query(MarkdownFence)
        assert wide_fence.max_scroll_x > 0 and wide_fence.show_horizontal_scrollbar
        assert wide_fence.scrollbar_size_horizontal == 1
        assert narrow_fence.max_scroll_x == 0 and not narrow_fence.show_horizontal_scrollbar
