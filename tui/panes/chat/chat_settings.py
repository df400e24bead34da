"""The collapsible chat settings: system prompt, temperature and max tokens."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Input, Label, Static

if TYPE_CHECKING:
    from muxtui.engine.events import ChatSettings as TurnSettings


Number = TypeVar("Number", int, float)


class ChatSettingsError(ValueError):
    """A setting has a value the model cannot take; the text says which and what is allowed."""


def _setting_widgets(values: dict[str, str]) -> list[Widget]:
    return [
        Label("System prompt", classes="setting-label"),
        Input(
            values["system-prompt"], placeholder="none", id="system-prompt", classes="setting-input"
        ),
        Horizontal(
            Label("Temperature", classes="setting-label"),
            Input(
                values["temperature"],
                placeholder="server default",
                type="number",
                id="temperature",
                classes="setting-input -short",
            ),
            Label("Max tokens", classes="setting-label"),
            Input(
                values["max-tokens"],
                placeholder="server default",
                type="integer",
                id="max-tokens",
                classes="setting-input -short",
            ),
            classes="setting-row",
        ),
        Static("", id="settings-problem", markup=False),
    ]


def check_temperature(text: str) -> float | None:
    """The temperature in `text` (empty: the server's default); raises if not within 0 to 2."""
    return _checked(
        text,
        float,
        lambda value: 0.0 <= value <= 2.0,
        f"temperature {text!r} is out of range: use 0 to 2, or leave it empty for the "
        "server's default",
    )


def check_max_tokens(text: str) -> int | None:
    """The max tokens in `text` (empty: the server's default); raises unless a whole number > 0."""
    return _checked(
        text,
        int,
        lambda value: value >= 1,
        f"max tokens {text!r} must be a whole number above 0, or empty for the server's default",
    )


def _checked(
    text: str, parse: Callable[[str], Number], allowed: Callable[[Number], bool], problem: str
) -> Number | None:
    if not text:
        return None
    try:
        value = parse(text)
    except ValueError:
        raise ChatSettingsError(problem) from None
    if not allowed(value):
        raise ChatSettingsError(problem)
    return value


class ChatSettings(Vertical):
    """System prompt and sampling settings for the next turns, folded to one line until needed.

    The inputs are mounted on first open: most chats never open the settings, and a Collapsible
    with three Inputs would add a dozen widgets to the first frame.
    """

    collapsed: reactive[bool] = reactive(True, init=False)

    class Changed(Message):
        """The person changed a setting (valid or not)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._values = {"system-prompt": "", "temperature": "", "max-tokens": ""}
        self._summary = ""

    def compose(self) -> ComposeResult:
        """The title line; the inputs come on first open."""
        yield Static(self._title(), id="settings-title", markup=False)

    def _title(self) -> str:
        arrow = "▶" if self.collapsed else "▼"
        return f"{arrow} Settings" + (f": {self._summary}" if self._summary else "")

    def watch_collapsed(self, collapsed: bool) -> None:
        """Show or hide the inputs, and turn the arrow."""
        self.query_one("#settings-title", Static).update(self._title())
        for body in self.query("#settings-body"):
            body.display = not collapsed

    async def on_click(self, event: events.Click) -> None:
        """A click on the title line opens or closes the settings."""
        if event.widget is not None and event.widget.id == "settings-title":
            await self.toggle()

    async def open(self) -> None:
        """Expand the settings (mounting the inputs) and focus the system prompt."""
        if not self.query("#settings-body"):
            await self.mount(Vertical(*_setting_widgets(self._values), id="settings-body"))
        self.collapsed = False
        self.query_one("#system-prompt", Input).focus()

    async def toggle(self) -> bool:
        """Open the settings if closed, else close them; returns whether they are open now."""
        if self.collapsed:
            await self.open()
            return True
        self.collapsed = True
        return False

    @property
    def system_prompt(self) -> str:
        """The system prompt, stripped; empty means none."""
        return self._values["system-prompt"].strip()

    def settings(self) -> TurnSettings:
        """The settings as the engine keeps them; raises ChatSettingsError if one is invalid."""
        from muxtui.engine.events import ChatSettings as TurnSettings

        try:
            return TurnSettings(
                self.system_prompt,
                check_temperature(self._values["temperature"].strip()),
                check_max_tokens(self._values["max-tokens"].strip()),
            )
        except ChatSettingsError as exc:
            raise ChatSettingsError(f"{exc} (Ctrl+S opens the settings)") from None

    def load(self, settings: TurnSettings) -> None:
        """Show a conversation's saved settings (the inputs too, if they are mounted)."""
        self._values = {
            "system-prompt": settings.system_prompt,
            "temperature": "" if settings.temperature is None else f"{settings.temperature:g}",
            "max-tokens": "" if settings.max_tokens is None else str(settings.max_tokens),
        }
        for input_id, value in self._values.items():
            for box in self.query(f"#{input_id}").results(Input):
                with box.prevent(Input.Changed):
                    box.value = value
                box.remove_class("-invalid")
        for line in self.query("#settings-problem").results(Static):
            line.display = False
        self._update_summary()

    def on_input_changed(self, event: Input.Changed) -> None:
        """Remember the value, and keep a one-line summary in the title while collapsed."""
        event.stop()
        if event.input.id in self._values:
            self._values[event.input.id] = event.value
        self._show_problem(event.input)
        self._update_summary()
        self.post_message(self.Changed())

    def _update_summary(self) -> None:
        parts = []
        if self.system_prompt:
            parts.append("system prompt")
        if value := self._values["temperature"].strip():
            parts.append(f"temperature {value}")
        if value := self._values["max-tokens"].strip():
            parts.append(f"max {value} tokens")
        self._summary = ", ".join(parts)
        self.query_one("#settings-title", Static).update(self._title())

    def _show_problem(self, changed: Input) -> None:
        """Say what is wrong with the value being typed, in one line under the inputs."""
        problem = ""
        checks = (("temperature", check_temperature), ("max-tokens", check_max_tokens))
        for input_id, check in checks:
            try:
                check(self._values[input_id].strip())
            except ChatSettingsError as exc:
                problem = problem or str(exc)
                bad = True
            else:
                bad = False
            if changed.id == input_id:
                changed.set_class(bad, "-invalid")
        line = self.query_one("#settings-problem", Static)
        line.update(problem)
        line.display = bool(problem)
