"""Pilot tests of how a person finds things: the palette, the conversation key, the empty chat."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from textual.command import CommandList
from textual.widgets import Label, Static

from muxtui.tui.panes import PANES
from muxtui.tui.panes.chat.conversation_list import ConversationList
from muxtui.tui.panes.chat.empty_state import EmptyState
from muxtui.tui.panes.chat.prompt_input import PromptInput
from muxtui.tui.panes.models.model_table import ModelTable
from muxtui.tui.widgets.footer import KeysFooter
from tests.fake_server import FakeOpenAIServer
from tests.test_tui_support import (
    chat_pane,
    local_entry,
    make_app,
    provider_config,
    reply_done,
    send_prompt,
    started,
    wait_until,
)

WriteConfig = Callable[[str], Path]

# Every action a pane offers, as the palette must list it: title -> the pane action it runs.
PANE_ACTIONS = {
    "New chat": "new_chat",
    "Switch model": "pick_model",
    "Chat settings": "toggle_settings",
    "Stop reply": "stop",
    "Copy last reply": "copy_reply",
    "Conversations": "focus_conversations",
    "Rename conversation": "rename_chat",
    "Delete conversation": "delete_chat",
    "Export conversation": "export_chat",
    "Preload model": "preload",
    "Unload model": "unload",
    "Pin or unpin model": "toggle_pin",
    "Rescan models": "rescan",
    "Monitor time window": "next_window",
    "Refresh fit": "refresh_report",
    "Apply flags": "apply_flags",
    "Start batch": "start_batch",
    "Cancel batch": "cancel_batch",
    "Resume batch": "resume_batch",
}


async def palette_titles(pilot: object) -> list[str]:
    """Open the command palette and list what it offers with nothing typed."""
    from textual.pilot import Pilot

    assert isinstance(pilot, Pilot)
    await pilot.press("ctrl+p")
    await wait_until(
        pilot,
        lambda: (
            bool(pilot.app.screen.query(CommandList))
            and pilot.app.screen.query_one(CommandList).option_count > 10
        ),
        "the palette's commands",
    )
    await pilot.pause(0.3)  # let every provider finish listing
    commands = pilot.app.screen.query_one(CommandList)
    titles = [
        str(commands.get_option_at_index(index).prompt).split("\n")[0]
        for index in range(commands.option_count)
    ]
    await pilot.press("escape")
    return titles


async def test_palette_offers_every_pane_action_exactly_once(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    app = make_app(write_config(provider_config(fake_server.base_url, extra=local_entry("tiny"))))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        titles = await palette_titles(pilot)
        counts = Counter(titles)
        assert [title for title, count in counts.items() if count > 1] == []
        for title in [
            *PANE_ACTIONS,
            "Chat pane",
            "Models pane",
            "Monitor pane",
            "Switch theme",
            "Quit",
        ]:
            assert counts[title] == 1, (title, titles)
        assert "Theme" not in counts  # Textual's own would duplicate "Switch theme"
        registered = {command.title: command.action for spec in PANES for command in spec.commands}
        assert registered == PANE_ACTIONS


async def test_palette_commands_reach_a_pane_not_shown_yet(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    app = make_app(write_config(provider_config(fake_server.base_url, extra=local_entry("tiny"))))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        assert not app.query(ModelTable)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Pin or unpin model")
        await wait_until(
            pilot,
            lambda: str(app.screen.query_one(CommandList).get_option_at_index(0).prompt).startswith(
                "Pin or unpin"
            ),
            "the pin command",
        )
        await pilot.press("enter")
        await wait_until(pilot, lambda: bool(app.query(ModelTable)), "the Models pane")
        assert app.active_pane == "models"
        # The first row is a remote model: the pane says what to do instead of pinning it.
        await wait_until(
            pilot,
            lambda: any("Select a local model" in n.message for n in app._notifications),
            "the explanation",
        )


async def test_a_key_focuses_the_conversation_list_with_a_visible_cue(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    app = make_app(write_config(provider_config(fake_server.base_url)))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        await send_prompt(pilot, "first topic")
        await reply_done(pilot)
        sidebar = app.query_one("#sidebar")
        unfocused_hint = sidebar.query_one(".hint.-unfocused", Label)
        focused_hint = sidebar.query_one(".hint.-focused", Label)
        assert "^l pick" in str(unfocused_hint.render())
        assert unfocused_hint.display and not focused_hint.display
        title_style = sidebar.query_one(".section-title").styles.background

        await pilot.press("ctrl+l")
        await pilot.pause()
        conversations = app.query_one(ConversationList)
        assert conversations.has_focus
        assert conversations.highlighted == 0
        assert focused_hint.display and not unfocused_hint.display
        assert "r rename" in str(focused_hint.render()) and "esc back" in str(focused_hint.render())
        assert sidebar.query_one(".section-title").styles.background != title_style

        await pilot.press("escape")
        await pilot.pause()
        assert app.query_one(PromptInput).has_focus
        assert unfocused_hint.display


async def test_narrow_screen_folds_the_list_until_its_key_is_pressed(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    app = make_app(write_config(provider_config(fake_server.base_url)))
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        await send_prompt(pilot, "first topic")
        await reply_done(pilot)
        sidebar = app.query_one("#sidebar")
        assert not sidebar.display
        assert app.query_one(PromptInput).size.width > 70
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert sidebar.display and app.query_one(ConversationList).has_focus
        await pilot.press("enter")  # opens the highlighted conversation, back to the prompt
        await pilot.pause()
        assert app.query_one(PromptInput).has_focus
        assert not sidebar.display


async def test_empty_chat_says_which_model_how_to_switch_and_how_to_send(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    extra = '[ui.keys]\npick-model = "ctrl+g"\n'
    app = make_app(write_config(provider_config(fake_server.base_url, extra=extra)))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        guide = app.query_one(EmptyState)
        assert guide.display
        text = str(guide.render())
        assert "New chat with fake" in text
        assert "Ctrl+G switches the model" in text
        assert "press Enter to send" in text and "Ctrl+J starts a new line" in text
        assert "Ctrl+L opens a saved conversation" in text
        await send_prompt(pilot, "hello")
        await reply_done(pilot)
        assert not guide.display
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert guide.display


async def test_settings_say_the_allowed_range_while_typing(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    app = make_app(write_config(provider_config(fake_server.base_url)))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        await pilot.press("ctrl+s")
        await pilot.pause()
        problem = app.query_one("#settings-problem", Static)
        temperature = app.query_one("#temperature")
        temperature.focus()
        await pilot.press("3")
        await pilot.pause()
        assert problem.display
        assert str(problem.render()) == (
            "temperature '3' is out of range: use 0 to 2, or leave it empty for the server's "
            "default"
        )
        assert "-invalid" in temperature.classes
        await pilot.press("backspace", "1", ".", "5")
        await pilot.pause()
        assert not problem.display and "-invalid" not in temperature.classes
        app.query_one("#max-tokens").focus()
        await pilot.press("0")
        await pilot.pause()
        assert "max tokens '0' must be a whole number above 0" in str(problem.render())
        await pilot.press("backspace", "1", "6")
        await pilot.pause()
        assert not problem.display
        await send_prompt(pilot, "hi")
        await reply_done(pilot)
        sent = fake_server.requests[-1].json
        assert sent["temperature"] == 1.5 and sent["max_tokens"] == 16
        assert chat_pane(app).turn is None


async def test_clicks_switch_panes_open_the_picker_and_the_settings(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    app = make_app(write_config(provider_config(fake_server.base_url)))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        await pilot.click("#pane-tabs", offset=(13, 0))  # "Models F3", after "Chat F2"
        await wait_until(pilot, lambda: bool(app.query(ModelTable)), "the Models pane")
        assert app.active_pane == "models"
        await pilot.click("#pane-tabs", offset=(3, 0))
        await pilot.pause()
        assert app.active_pane == "chat"

        await pilot.click("#chat-toolbar", offset=(10, 0))
        await wait_until(
            pilot, lambda: type(app.screen).__name__ == "ModelPickerScreen", "the picker"
        )
        await pilot.press("escape")
        await pilot.pause()
        footer = app.query_one(KeysFooter)
        await pilot.click(KeysFooter, offset=(str(footer.render()).index("^o Model") + 1, 0))
        await wait_until(
            pilot, lambda: type(app.screen).__name__ == "ModelPickerScreen", "the picker again"
        )
        await pilot.press("escape")
        await pilot.pause()

        await pilot.click("#settings-title")
        await wait_until(pilot, lambda: bool(app.query("#system-prompt")), "the settings")
        assert app.query_one("#system-prompt").has_focus
        assert str(app.query_one("#settings-title", Static).render()).startswith("▼ Settings")
