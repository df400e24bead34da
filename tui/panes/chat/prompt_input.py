"""The multi-line prompt box: Enter sends, Ctrl+J (or Shift/Alt+Enter where the terminal tells
them apart) starts a new line."""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import TextArea


class PromptInput(TextArea):
    """A TextArea whose Enter key submits the text instead of inserting a newline."""

    BINDINGS: ClassVar[list[BindingType]] = [
        # Priority, so Enter is ours before TextArea's own key handler inserts a newline.
        Binding(
            "enter",
            "submit",
            "Send",
            id="send",
            priority=True,
            tooltip="Send the prompt to the selected model",
        ),
        Binding(
            "ctrl+j,shift+enter,alt+enter",
            "newline",
            "Newline",
            id="newline",
            priority=True,
            show=False,
            key_display="^j",
            tooltip="Start a new line in the prompt (Ctrl+J works in every terminal)",
        ),
        # The conversation scrolls from here: the prompt keeps the focus while reading back.
        Binding(
            "pageup",
            "scroll_conversation(-1)",
            "Scroll up",
            id="scroll-up",
            show=False,
            tooltip="Scroll the conversation up a screen",
        ),
        Binding(
            "pagedown",
            "scroll_conversation(1)",
            "Scroll down",
            id="scroll-down",
            show=False,
            tooltip="Scroll the conversation down a screen",
        ),
        Binding(
            "ctrl+home",
            "scroll_conversation(0, 'first')",
            "First message",
            id="scroll-first",
            show=False,
            tooltip="Go to the first message of the conversation",
        ),
        Binding(
            "ctrl+end",
            "scroll_conversation(0, 'last')",
            "Last message",
            id="scroll-last",
            show=False,
            tooltip="Go to the newest message",
        ),
    ]

    class ScrollRequested(Message):
        """The person asked to scroll the conversation: by `pages`, or to an `edge`."""

        def __init__(self, pages: int, edge: str = "") -> None:
            super().__init__()
            self.pages = pages
            self.edge = edge  # "first", "last" or ""

    class Submitted(Message):
        """The person pressed the send key; `text` is the whole prompt."""

        def __init__(self, prompt_input: PromptInput, text: str) -> None:
            super().__init__()
            self.prompt_input = prompt_input
            self.text = text

        @property
        def control(self) -> PromptInput:
            """The prompt box that was submitted."""
            return self.prompt_input

    def __init__(self, *, id: str | None = None, placeholder: str = "") -> None:
        super().__init__(
            id=id,
            soft_wrap=True,
            tab_behavior="focus",
            show_line_numbers=False,
            highlight_cursor_line=False,
            placeholder=placeholder,
        )

    # Priority bindings run in the app's queue, ahead of typed keys still waiting in this
    # widget's queue (a fast burst, a paste-like send); `call_later` queues the work behind them.

    def action_submit(self) -> None:
        """Post the prompt text upwards once every key typed before Enter has landed."""
        self.call_later(self._post_submitted)

    def action_newline(self) -> None:
        """Insert a line break at the cursor, after the keys typed before it."""
        self.call_later(self._insert_newline)

    def action_scroll_conversation(self, pages: int, edge: str = "") -> None:
        """Ask the pane to scroll the conversation; the prompt keeps the focus."""
        self.post_message(self.ScrollRequested(pages, edge))

    def _post_submitted(self) -> None:
        self.post_message(self.Submitted(self, self.text))

    def _insert_newline(self) -> None:
        start, end = self.selection
        self.replace("\n", start, end, maintain_selection_offset=False)
