"""The collapsible chat settings: system prompt, temperature and max tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Collapsible, Input, Label

if TYPE_CHECKING:
    from muxtui.engine.events import ChatParams


class ChatSettingsError(ValueError):
    """A setting has a value the model cannot take; the text says which and what is allowed."""


def _setting_widgets() -> list[Widget]:
    return [
        Label("System prompt", classes="setting-label"),
        Input(placeholder="none", id="system-prompt", classes="setting-input"),
        Horizontal(
            Label("Temperature", classes="setting-label"),
            Input(
                placeholder="server default",
                type="number",
                id="temperature",
                classes="setting-input -short",
            ),
            Label("Max tokens", classes="setting-label"),
            Input(
                placeholder="server default",
                type="integer",
                id="max-tokens",
                classes="setting-input -short",
            ),
            classes="setting-row",
        ),
    ]


class ChatSettings(Collapsible):
    """System prompt and sampling settings for the next turns, collapsed until needed."""

    def __init__(self, *, id: str | None = None) -> None:
        # The inputs are mounted on first expand: most chats never open the settings, and
        # three Inputs would add to the first frame.
        super().__init__(title="Settings", collapsed=True, id=id)
        self._values = {"system-prompt": "", "temperature": "", "max-tokens": ""}
        self._inputs_mounted = False

    async def on_collapsible_expanded(self, event: Collapsible.Expanded) -> None:
        """Mount the inputs the first time the settings open."""
        event.stop()
        if not self._inputs_mounted:
            self._inputs_mounted = True
            await self.query_one(Collapsible.Contents).mount_all(_setting_widgets())

    def on_collapsible_collapsed(self, event: Collapsible.Collapsed) -> None:
        """Keep the event to ourselves."""
        event.stop()

    async def open(self) -> None:
        """Expand the settings (mounting the inputs) and focus the system prompt."""
        self.collapsed = False
        if not self._inputs_mounted:
            self._inputs_mounted = True
            await self.query_one(Collapsible.Contents).mount_all(_setting_widgets())
        self.query_one("#system-prompt", Input).focus()

    @property
    def system_prompt(self) -> str:
        """The system prompt, stripped; empty means none."""
        return self._values["system-prompt"].strip()

    def chat_params(self) -> ChatParams:
        """The sampling settings as the engine takes them; raises ChatSettingsError if invalid."""
        from muxtui.engine.events import ChatParams

        temperature_text = self._values["temperature"].strip()
        max_tokens_text = self._values["max-tokens"].strip()
        temperature: float | None = None
        max_tokens: int | None = None
        if temperature_text:
            try:
                temperature = float(temperature_text)
            except ValueError:
                temperature = -1.0
            if not 0.0 <= temperature <= 2.0:
                raise ChatSettingsError(
                    f"temperature {temperature_text!r} is out of range: use 0 to 2, or leave "
                    "it empty for the server's default (Ctrl+S opens the settings)"
                )
        if max_tokens_text:
            try:
                max_tokens = int(max_tokens_text)
            except ValueError:
                max_tokens = 0
            if max_tokens < 1:
                raise ChatSettingsError(
                    f"max tokens {max_tokens_text!r} must be a whole number above 0, or empty "
                    "for the server's default (Ctrl+S opens the settings)"
                )
        return ChatParams(temperature=temperature, max_tokens=max_tokens)

    def on_input_changed(self, event: Input.Changed) -> None:
        """Remember the value, and keep a one-line summary in the title while collapsed."""
        event.stop()
        if event.input.id in self._values:
            self._values[event.input.id] = event.value
        parts = []
        if self.system_prompt:
            parts.append("system prompt")
        if value := self._values["temperature"].strip():
            parts.append(f"temperature {value}")
        if value := self._values["max-tokens"].strip():
            parts.append(f"max {value} tokens")
        self.title = "Settings" + (f": {', '.join(parts)}" if parts else "")
