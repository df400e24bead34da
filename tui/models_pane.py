"""The Models pane: every known model with its server's state; preload, unload, pin, log tail."""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Label, Static

from muxtui.engine.config import Config
from muxtui.engine.events import ModelEntry, ServerState
from muxtui.tui.chat_pane import configured_models
from muxtui.tui.display import shorten_home
from muxtui.tui.widgets.model_table import ModelTable
from muxtui.tui.widgets.server_log import ServerLog

if TYPE_CHECKING:
    from textual.timer import Timer

    from muxtui.engine.core import Engine

# Seconds between refreshes of the table (TTL countdowns, RSS); re-armed after each one.
REFRESH_EVERY_S = 1.0


class ModelsPane(Vertical):
    """A table of models, actions on the selected local server, and its log."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "preload", "Preload", id="preload", tooltip="Start the selected server"),
        Binding("u", "unload", "Unload", id="unload", tooltip="Stop the selected server"),
        Binding(
            "t", "toggle_pin", "Pin/unpin", id="pin", tooltip="Never evict the selected server"
        ),
        Binding(
            "r",
            "rescan",
            "Rescan",
            id="rescan-models",
            tooltip="Look again for GGUF files, llama-server and the bundled model",
        ),
    ]

    def __init__(self, config: Config, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.config = config
        self.engine: Engine | None = None
        self.entries: list[ModelEntry] = configured_models(config)
        self._refresh_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        """The table above the selected server's details and log."""
        yield Label(
            "p preload · u unload · t pin/unpin · r rescan · the log follows the selected model",
            classes="hint",
        )
        yield ModelTable(id="model-table")
        yield Static("", id="model-detail", markup=False)
        yield Label("Log", id="log-title", classes="section-title")
        yield ServerLog(id="server-log")

    class Mounted(Message):
        """The pane is in place (it mounts after the first frame); the app hands it the engine."""

        def __init__(self, pane: ModelsPane) -> None:
            super().__init__()
            self.pane = pane

    def on_mount(self) -> None:
        """Show what the config names, and tell the app the pane is ready for the engine."""
        self.query_one(ModelTable).show_entries(self.entries)
        self._show_selected()
        self.post_message(self.Mounted(self))

    def use_engine(self, engine: Engine) -> None:
        """Start showing the engine's live model list, refreshed about once a second."""
        self.engine = engine
        self.refresh_models()

    def refresh_models(self) -> None:
        """Re-read the model list now and re-arm the next refresh."""
        if self._refresh_timer is not None:
            self._refresh_timer.stop()
            self._refresh_timer = None
        if self.engine is None:
            return
        self._refresh_timer = self.set_timer(REFRESH_EVERY_S, self.refresh_models)
        if not self.is_on_screen:  # hidden behind another tab: catch up in on_show
            return
        self.entries = list(self.engine.list_models())
        self.query_one(ModelTable).show_entries(self.entries)
        self._show_selected()

    def on_show(self) -> None:
        """Bring the table up to date as soon as the pane comes into view."""
        self.call_after_refresh(self.refresh_models)

    def _selected_entry(self) -> ModelEntry | None:
        name = self.query_one(ModelTable).selected_name
        return next((entry for entry in self.entries if entry.name == name), None)

    @on(DataTable.RowHighlighted, "#model-table")
    def _row_highlighted(self) -> None:
        self._show_selected()

    def _show_selected(self) -> None:
        self.refresh_bindings()
        entry = self._selected_entry()
        detail = self.query_one("#model-detail", Static)
        detail.update(entry.detail if entry is not None else "")
        detail.display = bool(entry is not None and entry.detail)
        detail.set_class(entry is not None and entry.state == ServerState.FAILED, "-failed")
        log = self.query_one(ServerLog)
        title = self.query_one("#log-title", Label)
        if entry is None or not entry.local:
            what = "remote models have no local log" if entry is not None else "no model selected"
            title.update(f"Log · {what}")
            log.follow(None, "Select a local model to follow its server's log.")
            return
        path = self._log_path(entry.name)
        where = f" · {shorten_home(path)}" if path is not None else ""
        title.update(f"Log · {entry.name}{where}")
        log.follow(path, "The server has not written a log yet.")

    def _log_path(self, name: str) -> Path | None:
        if self.engine is None:
            return None
        path: Path = self.engine.servers.log_path(name)
        return path

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Offer server actions only on a local model, once the engine is running."""
        if action == "rescan":
            return self.engine is not None
        if action in ("preload", "unload", "toggle_pin"):
            entry = self._selected_entry()
            return self.engine is not None and entry is not None and entry.local
        return True

    def action_preload(self) -> None:
        """Start the selected local server and keep it warm."""
        if (entry := self._selected_entry()) is not None and self.engine is not None:
            self._run_server_action(
                f"preload {entry.name}", self.engine.servers.preload(entry.name)
            )

    def action_unload(self) -> None:
        """Stop the selected local server."""
        if (entry := self._selected_entry()) is not None and self.engine is not None:
            self._run_server_action(f"unload {entry.name}", self.engine.servers.unload(entry.name))

    def action_rescan(self) -> None:
        """Scan the model folders and PATH again (a GGUF just downloaded shows up)."""
        if self.engine is not None:
            self._run_server_action("rescan", self.engine.servers.refresh())

    def action_toggle_pin(self) -> None:
        """Pin the selected local server (never evicted) or unpin it."""
        from muxtui.engine.errors import MuxtuiError

        if (entry := self._selected_entry()) is not None and self.engine is not None:
            try:
                self.engine.servers.set_pinned(entry.name, not entry.pinned)
            except MuxtuiError as exc:
                self.notify(str(exc), title=f"pin {entry.name}", severity="error", timeout=10)
            self.refresh_models()

    def _run_server_action(self, what: str, result: Awaitable[object]) -> None:
        """Await an action's result in a worker, reporting a failure as a notification."""

        async def run(pending: Awaitable[object]) -> None:
            from muxtui.engine.errors import MuxtuiError

            try:
                await pending
            except MuxtuiError as exc:
                self.notify(str(exc), title=what, severity="error", timeout=10)
            self.refresh_models()

        self.run_worker(run(result), group="server-actions", exit_on_error=False)
