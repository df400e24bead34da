"""The prompt box sends exactly what was typed, even when keys arrive in one burst."""

from __future__ import annotations

from textual import on
from textual.app import App, ComposeResult

from muxtui.tui.panes.chat.prompt_input import PromptInput
from tests.test_tui_support import burst


class PromptApp(App[None]):
    """Just the prompt box, recording what it submits."""

    def __init__(self) -> None:
        super().__init__()
        self.submitted: list[str] = []

    def compose(self) -> ComposeResult:
        yield PromptInput(id="prompt")

    @on(PromptInput.Submitted)
    def _record(self, event: PromptInput.Submitted) -> None:
        self.submitted.append(event.text)


async def test_enter_in_the_same_burst_sends_everything_typed_before_it() -> None:
    app = PromptApp()
    async with app.run_test(size=(80, 10)) as pilot:
        burst(app, "Write a **haiku** about GPUs", "enter")
        await pilot.pause()
        await pilot.pause()
        assert app.submitted == ["Write a **haiku** about GPUs"]


async def test_newline_in_a_burst_lands_where_it_was_typed() -> None:
    app = PromptApp()
    async with app.run_test(size=(80, 10)) as pilot:
        burst(app, "one", "ctrl+j")
        burst(app, "two", "enter")
        await pilot.pause()
        await pilot.pause()
        assert app.submitted == ["one\ntwo"]
