"""Pilot tests of chat at length: a 2,000-message conversation opens at its newest message,
scrolls from the prompt to its first one, stays bounded in what it mounts; 500 conversations
filter by a word; a conversation exports to Markdown."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot

from muxtui.tui.app import MuxtuiApp
from muxtui.tui.panes.chat.chat_log import MOUNTED_AT_MOST, ChatLog
from muxtui.tui.panes.chat.conversation_list import ConversationList
from muxtui.tui.panes.chat.message_view import MessageView
from muxtui.tui.panes.chat.prompt_input import PromptInput
from tests.fake_server import FakeOpenAIServer
from tests.long_history import (
    MessageText,
    add_conversation,
    add_conversations,
    numbered_text,
)
from tests.test_tui_support import (
    burst,
    chat_pane,
    make_app,
    provider_config,
    reply_done,
    send_prompt,
    started,
    wait_until,
)

WriteConfig = Callable[[str], Path]
LONG = 2000


def visible(log: ChatLog) -> list[MessageView]:
    """The message views at least partly in sight, oldest first."""
    regions = log.arranged_regions()
    top, bottom = log.scroll_y, log.scroll_y + log.scrollable_content_region.height
    return [
        view
        for view in log.message_views
        if (region := regions.get(view)) is not None and region.bottom > top and region.y < bottom
    ]


async def settled(pilot: Pilot[int], log: ChatLog, what: str) -> None:
    await wait_until(pilot, lambda: log.is_settled, what, timeout=60)
    await pilot.pause()
    await wait_until(pilot, lambda: log.is_settled, what, timeout=60)


async def open_long(
    pilot: Pilot[int], app: MuxtuiApp, count: int = LONG, text: MessageText = numbered_text
) -> int:
    """Write a conversation of `count` messages and open it; its id."""
    conversation_id = add_conversation(app.engine.paths.history_db, "long one", count, text)
    await chat_pane(app).open_conversation(conversation_id)
    await settled(pilot, app.query_one(ChatLog), "the conversation to open")
    app.query_one(PromptInput).focus()
    return conversation_id


async def test_opening_shows_the_newest_message_and_keeps_keys_typed_meanwhile(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    app = make_app(write_config(provider_config(fake_server.base_url)))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        db = app.engine.paths.history_db
        add_conversation(db, "short one", 4)
        long_id = add_conversation(db, "two thousand", LONG)
        await chat_pane(app).refresh_conversations()
        await pilot.press("ctrl+l")
        assert app.query_one(ConversationList).highlighted_id == long_id
        log = app.query_one(ChatLog)
        prompt = app.query_one(PromptInput)

        burst(app, "", "enter")
        await wait_until(pilot, lambda: prompt.has_focus, "the prompt to take the focus")
        opening = len(log.messages) < LONG or not log.is_settled
        burst(app, "typed while it opens")
        await wait_until(pilot, lambda: len(log.messages) == LONG, "the conversation")
        await settled(pilot, log, "the conversation to be shown")

        assert opening, "the keys were typed after the conversation had opened"
        assert prompt.text == "typed while it opens"
        newest = log.message_views[-1]
        assert newest.index == LONG - 1 and newest.text == numbered_text(LONG - 1)
        assert newest in visible(log) and newest.rendered
        assert 0 < len(log.message_views) <= MOUNTED_AT_MOST
        assert app.sub_title == "two thousand"


async def test_page_up_from_the_prompt_moves_a_page_per_key_even_in_a_burst(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    app = make_app(write_config(provider_config(fake_server.base_url)))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        # One line per message: every message view is the same height, so rows count pages.
        await open_long(pilot, app, 600, lambda i: f"line {i}")
        log = app.query_one(ChatLog)
        prompt = app.query_one(PromptInput)
        page = log.scrollable_content_region.height

        def row() -> int:
            """The conversation's row at the top of the view (the first message's is 0)."""
            regions = log.arranged_regions()
            first, second = log.message_views[:2]
            height = regions[second].y - regions[first].y
            return int(log.scroll_y + first.index * height - regions[first].y)

        bottom = row()
        burst(app, "", "pageup")
        await settled(pilot, log, "one page up")
        assert bottom - row() == page
        burst(app, "", *["pageup"] * 20)
        await settled(pilot, log, "twenty pages up")
        assert bottom - row() == 21 * page
        assert prompt.has_focus
        burst(app, "", "pagedown", "pagedown")
        await settled(pilot, log, "two pages down")
        assert bottom - row() == 19 * page


def mostly_short(index: int) -> str:
    """Short messages with a Markdown reply (list, code) every twentieth: a quick test."""
    return numbered_text(index) if index % 20 == 1 else f"message {index}"


async def test_scrolling_up_from_the_prompt_reaches_the_first_message(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    app = make_app(write_config(provider_config(fake_server.base_url)))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        await open_long(pilot, app, LONG, mostly_short)
        log = app.query_one(ChatLog)
        most_mounted = 0
        for _burst in range(100):
            if log.first == 0 and log.message_views[0] in visible(log):
                break
            burst(app, "", *["pageup"] * 40)
            await settled(pilot, log, "a burst of PageUp")
            most_mounted = max(most_mounted, len(log.message_views))
        first = log.message_views[0]
        assert first.index == 0 and first.text == mostly_short(0)
        assert first in visible(log)
        assert app.query_one(PromptInput).has_focus
        assert most_mounted <= MOUNTED_AT_MOST  # what scrolled past was released
        assert all(view.rendered for view in visible(log))

        # Ctrl+End (and Ctrl+Home) jump from the prompt.
        await pilot.press("ctrl+end")
        await settled(pilot, log, "the newest message")
        assert log.message_views[-1].index == LONG - 1 and log.following
        await pilot.press("ctrl+home")
        await settled(pilot, log, "the first message")
        assert log.message_views[0].index == 0 and log.message_views[0] in visible(log)


async def test_filtering_500_conversations_by_a_word_in_title_or_text(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    app = make_app(write_config(provider_config(fake_server.base_url)))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)

        def text_of(number: int) -> Callable[[int], str]:
            word = "Zanzibar" if number in (7, 250, 499) else "Lisbon"
            return lambda i: f"conversation {number}, message {i}: a trip to {word}"

        conversations = [
            ("zanzibar notes" if n in (100, 300) else f"plans {n}", 4, text_of(n))
            for n in range(500)
        ]
        ids = add_conversations(app.engine.paths.history_db, conversations)
        expected = {ids[n] for n in (7, 100, 250, 300, 499)}
        await chat_pane(app).refresh_conversations()
        listed = app.query_one(ConversationList)
        assert listed.option_count == 500

        await pilot.press("ctrl+l", "slash")
        assert app.query_one("#conversation-filter").has_focus
        await pilot.press(*"zanzibar")
        await wait_until(pilot, lambda: listed.option_count == 5, "the matches")
        assert {c.id for c in listed.conversations} == expected
        assert "5 matches" in str(app.query_one("#sidebar .section-title").render())
        # One line each: the title, its date and its size (4 messages).
        line = str(listed.get_option_at_index(0).prompt)
        assert "\n" not in line and line.endswith(" 4")

        await pilot.press("down", "enter")
        await wait_until(pilot, lambda: chat_pane(app).conversation_id in expected, "the open")
        await pilot.press("ctrl+l", "slash", "escape")
        await wait_until(pilot, lambda: listed.option_count == 500, "the whole list again")


async def test_export_writes_a_private_markdown_file_and_never_overwrites(
    fake_server: FakeOpenAIServer, write_config: WriteConfig, isolated_home: Path
) -> None:
    downloads = isolated_home / "Downloads"
    downloads.mkdir()
    fake_server.behaviour.tokens = 3
    app = make_app(write_config(provider_config(fake_server.base_url)))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        await send_prompt(pilot, "what is: a/b?")
        await reply_done(pilot)
        await pilot.press("ctrl+l", "e")
        first = downloads / "what is- a-b.md"
        await wait_until(pilot, first.exists, "the exported file")
        text = first.read_text(encoding="utf-8")
        assert text.startswith("# what is: a/b?\n")
        assert "## You\n\nwhat is: a/b?\n" in text
        assert "## Assistant · fake\n\ntok tok tok\n" in text
        assert os.stat(first).st_mode & 0o777 == 0o600
        assert any("Downloads/what is- a-b.md" in n.message for n in app._notifications)

        await app.run_pane_action("chat", "export_chat")  # the palette's command
        second = downloads / "what is- a-b (2).md"
        await wait_until(pilot, second.exists, "a second file")
        assert first.read_text(encoding="utf-8") == text


async def test_export_to_a_folder_that_cannot_take_it_says_so(
    fake_server: FakeOpenAIServer,
    write_config: WriteConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = make_app(write_config(provider_config(fake_server.base_url)))
    monkeypatch.chdir("/proc")  # no ~/Downloads: exports go to the current folder
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        add_conversation(app.engine.paths.history_db, "cannot land", 2)
        await chat_pane(app).refresh_conversations()
        await pilot.press("ctrl+l", "e")
        await wait_until(
            pilot,
            lambda: any("could not write to /proc" in n.message for n in app._notifications),
            "the error",
        )
        (message,) = [n.message for n in app._notifications if "/proc" in n.message]
        assert "\n" not in message and "make it writable" in message
