"""The Models pane: every known model with its server's state; preload, unload, pin, log tail."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import DataTable, Label, Static

from muxtui.engine.events import ModelEntry, ModelsChanged, ServerState, ServerStateChanged
from muxtui.tui.bridge import EventReceived
from muxtui.tui.display import describe, shorten_home
from muxtui.tui.panes.models.model_table import ModelTable
from muxtui.tui.panes.models.server_log import ServerLog

if TYPE_CHECKING:
    from textual.timer import Timer

    from muxtui.engine.core import Engine

# Seconds between refreshes of the live counters (TTL countdowns, RSS) while the pane is shown;
# re-armed after each one.
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

    def __init__(self, engine: Engine) -> None:
        super().__init__(id="models-pane")
        self.engine = engine
        self.entries: list[ModelEntry] = []
        self._refresh_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        """The table above the selected server's details and log."""
        yield Label(
            "p preload · u unload · t pin · r rescan · the log follows the selected model",
            classes="hint",
        )
        yield ModelTable(id="model-table")
        yield Static("", id="model-detail", markup=False)
        yield Label("Log", id="log-title", classes="section-title")
        yield ServerLog(id="server-log")

    def on_mount(self) -> None:
        """Show the engine's models; the live counters refresh while the pane is shown."""
        self.refresh_models()

    def refresh_models(self) -> None:
        """Re-read the model list (live counters) now and re-arm the next refresh."""
        if self._refresh_timer is not None:
            self._refresh_timer.stop()
        self._refresh_timer = self.set_timer(REFRESH_EVERY_S, self.refresh_models)
        if self.is_on_screen or not self.entries:  # hidden: catch up in on_show
            self._show_entries(self.engine.list_models())

    def on_show(self) -> None:
        """Bring the table up to date as soon as the pane comes into view."""
        self.call_after_refresh(self.refresh_models)

    @on(EventReceived)
    def _event_received(self, event: EventReceived) -> None:
        data = event.data
        if isinstance(data, ServerStateChanged):
            self._show_entries(
                [
                    replace(entry, state=data.state, detail=data.detail)
                    if entry.name == data.model
                    else entry
                    for entry in self.entries
                ]
            )
        elif isinstance(data, ModelsChanged) and set(data.names) != {e.name for e in self.entries}:
            # The event names the models; rows for new ones need what only the list has.
            self._show_entries(self.engine.list_models())

    def _show_entries(self, entries: list[ModelEntry]) -> None:
        self.entries = entries
        self.query_one(ModelTable).show_entries(entries)
        self._show_selected()

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
        path = self.engine.server_log_path(entry.name)
        title.update(f"Log · {entry.name} · {shorten_home(path)}")
        log.follow(path, "The server has not written a log yet.")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Offer the server keys only on a local model."""
        if action in ("preload", "unload", "toggle_pin"):
            entry = self._selected_entry()
            return entry is not None and entry.local
        return True

    def _selected_local(self, what: str) -> ModelEntry | None:
        """The selected local model, or None after saying why `what` cannot be done."""
        entry = self._selected_entry()
        if entry is None or not entry.local:
            self.notify(
                f"Select a local model to {what} (↑ and ↓ move the selection).", severity="warning"
            )
            return None
        return entry

    def action_preload(self) -> None:
        """Start the selected local server and keep it warm."""
        if (entry := self._selected_local("preload")) is not None:
            self._run_server_action(f"preload {entry.name}", self.engine.preload(entry.name))

    def action_unload(self) -> None:
        """Stop the selected local server."""
        if (entry := self._selected_local("unload")) is not None:
            self._run_server_action(f"unload {entry.name}", self.engine.unload(entry.name))

    def action_rescan(self) -> None:
        """Look for models again now: model folders and PATH, loopback servers, API keys."""
        self.notify("Rescanning model folders, PATH and servers…", title="rescan", timeout=3)
        self.run_worker(self._rescan(), group="server-actions", exit_on_error=False)

    async def _rescan(self) -> None:
        before = {entry.name for entry in self.entries}
        try:
            entries = await self.engine.rediscover()
        except Exception as exc:  # say it in the pane rather than fail silently
            self.notify(describe(exc), title="rescan", severity="error", timeout=10)
            return
        new = len({entry.name for entry in entries} - before)
        plural = "" if len(entries) == 1 else "s"
        self.notify(
            f"Found {len(entries)} model{plural}" + (f" ({new} new)" if new else ""),
            title="rescan",
        )
        self._show_entries(entries)

    def action_toggle_pin(self) -> None:
        """Pin the selected local server (never evicted) or unpin it."""
        from muxtui.engine.errors import MuxtuiError

        if (entry := self._selected_local("pin or unpin")) is not None:
            try:
                self.engine.set_pinned(entry.name, not entry.pinned)
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
