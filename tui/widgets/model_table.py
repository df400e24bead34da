"""The table of every known model and its server's state, updating only the cells that changed."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import DataTable

from muxtui.engine.events import ModelEntry, ServerState

# (column key, heading); the key names the ModelEntry field shown, more or less.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "Model"),
    ("where", "Where"),
    ("state", "State"),
    ("port", "Port"),
    ("pid", "PID"),
    ("rss", "RSS"),
    ("vram", "VRAM"),
    ("load", "Load"),
    ("ttl", "Idle TTL"),
    ("in_flight", "Busy"),
    ("hits", "Hits"),
    ("misses", "Misses"),
    ("pin", "Pin"),
)

# Which theme colour each state is drawn in.
STATE_COLOURS: dict[ServerState, str] = {
    ServerState.WARM: "success",
    ServerState.BUSY: "accent",
    ServerState.STARTING: "warning",
    ServerState.STOPPING: "warning",
    ServerState.FAILED: "error",
    ServerState.COLD: "foreground-muted",
    ServerState.REMOTE: "secondary",
}
NONE = "–"


def format_bytes(count: int) -> str:
    """A byte count in MiB or GiB, or a dash for zero."""
    if count <= 0:
        return NONE
    if count >= 2**30:
        return f"{count / 2**30:.1f} GiB"
    return f"{count / 2**20:.0f} MiB"


def format_countdown(seconds: float | None) -> str:
    """Seconds left as m:ss (h:mm:ss past an hour), or a dash."""
    if seconds is None:
        return NONE
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def row_values(entry: ModelEntry) -> tuple[str, ...]:
    """The text of each cell of one model's row, in column order."""
    local = entry.local
    return (
        entry.name,
        "local" if local else entry.provider,
        entry.state.value,
        str(entry.port) if entry.port else NONE,
        str(entry.pid) if entry.pid else NONE,
        format_bytes(entry.rss_bytes),
        format_bytes(entry.vram_bytes),
        f"{entry.load_time_s:.2f} s" if entry.load_time_s is not None else NONE,
        format_countdown(entry.ttl_left_s),
        str(entry.in_flight) if local else NONE,
        str(entry.hits) if local else NONE,
        str(entry.misses) if local else NONE,
        "pinned" if entry.pinned else "",
    )


class ModelTable(DataTable[Text]):
    """One row per model, keyed by name; `show_entries` touches only rows and cells that changed."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._shown: dict[str, tuple[str, ...]] = {}
        self._states: dict[str, ServerState] = {}

    def on_mount(self) -> None:
        """Add the columns, and recolour the states when the theme changes."""
        for key, heading in COLUMNS:
            self.add_column(heading, key=key)
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._recolour())

    @property
    def selected_name(self) -> str | None:
        """The model name of the row under the cursor."""
        if not self.row_count:
            return None
        row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return row_key.value

    def show_entries(self, entries: Sequence[ModelEntry]) -> int:
        """Bring the table in line with `entries`; returns how many cells were written."""
        written = 0
        names = [entry.name for entry in entries]
        for gone in [name for name in self._shown if name not in set(names)]:
            self.remove_row(gone)
            del self._shown[gone]
            self._states.pop(gone, None)
        for entry in entries:
            values = row_values(entry)
            self._states[entry.name] = entry.state
            before = self._shown.get(entry.name)
            if before is None:
                self.add_row(*self._cells(entry.name, values), key=entry.name)
                written += len(values)
            else:
                for (key, _), old, new in zip(COLUMNS, before, values, strict=True):
                    if old != new:
                        cell = self._cell(entry.name, key, new)
                        self.update_cell(entry.name, key, cell, update_width=True)
                        written += 1
            self._shown[entry.name] = values
        return written

    def _cells(self, name: str, values: tuple[str, ...]) -> list[Text]:
        return [
            self._cell(name, key, value) for (key, _), value in zip(COLUMNS, values, strict=True)
        ]

    def _cell(self, name: str, key: str, value: str) -> Text:
        if key == "state":
            colour = self.app.theme_variables.get(STATE_COLOURS[self._states[name]], "")
            return Text(f"● {value}", style=colour)
        if key in ("name", "where", "pin"):
            return Text(value)
        return Text(value, justify="right")

    def _recolour(self) -> None:
        for name, values in self._shown.items():
            state_index = [key for key, _ in COLUMNS].index("state")
            self.update_cell(name, "state", self._cell(name, "state", values[state_index]))
