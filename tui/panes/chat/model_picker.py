"""The model picker: type to fuzzy-search every known model, local and remote."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.fuzzy import FuzzySearch
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option, OptionDoesNotExist

from muxtui.engine.events import ModelEntry
from muxtui.tui.dialogs import DialogScreen


def model_summary(entry: ModelEntry) -> str:
    """Where a model lives and its state, e.g. `local · warm` or `openrouter · remote`."""
    where = "local" if entry.local else entry.provider
    return f"{where} · {entry.state.value}"


def rank_models(query: str, entries: Sequence[ModelEntry]) -> list[tuple[ModelEntry, Content]]:
    """The entries matching `query` (fuzzy, best first), each with its name highlighted."""
    search = FuzzySearch()
    ranked: list[tuple[float, int, ModelEntry, Content]] = []
    for index, entry in enumerate(entries):
        name = Content(entry.name)
        if query:
            score, offsets = search.match(query, entry.name)
            if not score:
                continue
            for offset in offsets:
                name = name.stylize("bold underline", offset, offset + 1)
        else:
            score = 0.0
        ranked.append((-score, index, entry, name))
    ranked.sort(key=lambda item: (item[0], item[1]))
    return [(entry, name) for _, _, entry, name in ranked]


class ModelPickerScreen(DialogScreen[str | None]):
    """Type to fuzzy-search every known model, local and remote; Enter picks, Esc cancels."""

    AUTO_FOCUS = "#picker-search"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss_picker", "Cancel", id="picker-cancel"),
        Binding("down", "move(1)", "Next", show=False, priority=True),
        Binding("up", "move(-1)", "Previous", show=False, priority=True),
    ]

    def __init__(self, entries: Sequence[ModelEntry], current: str) -> None:
        super().__init__()
        self.entries = list(entries)
        self.current = current

    def compose(self) -> ComposeResult:
        """A search box over the list of models."""
        with Vertical(id="picker", classes="dialog"):
            yield Label("Switch model", classes="dialog-title")
            yield Input(placeholder="type to search models", id="picker-search")
            yield OptionList(id="picker-options")
            yield Label("Enter picks · Esc cancels", classes="dialog-hint")

    def on_mount(self) -> None:
        """List every model, with the current one highlighted."""
        self._show("")
        options = self.query_one("#picker-options", OptionList)
        try:
            options.highlighted = options.get_option_index(self.current)
        except OptionDoesNotExist:  # the current model is not known any more
            options.highlighted = 0 if options.option_count else None

    def _show(self, query: str) -> None:
        options = self.query_one("#picker-options", OptionList)
        options.clear_options()
        for entry, name in rank_models(query, self.entries):
            prompt = name + Content.styled(f"   {model_summary(entry)}", "dim")
            options.add_option(Option(prompt, id=entry.name))
        options.highlighted = 0 if options.option_count else None

    @on(Input.Changed, "#picker-search")
    def _search_changed(self, event: Input.Changed) -> None:
        self._show(event.value.strip())

    @on(Input.Submitted, "#picker-search")
    def _search_submitted(self) -> None:
        options = self.query_one("#picker-options", OptionList)
        option = options.highlighted_option
        if option is not None:
            self.dismiss(option.id)

    @on(OptionList.OptionSelected, "#picker-options")
    def _option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_move(self, step: int) -> None:
        """Move the highlight while the search box keeps focus."""
        options = self.query_one("#picker-options", OptionList)
        if options.option_count:
            current = options.highlighted if options.highlighted is not None else -step
            options.highlighted = (current + step) % options.option_count

    def action_dismiss_picker(self) -> None:
        """Close without changing the model."""
        self.dismiss(None)
