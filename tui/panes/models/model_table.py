"""The table of every known model and its server's state, updating only the cells that changed."""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import DataTable

from muxtui.engine.events import ModelEntry, ServerState
from muxtui.tui.display import NONE, format_bytes

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


# The columns a narrow table gives up, first to last; the others always show.
DROP_FIRST: tuple[str, ...] = (
    "misses",
    "hits",
    "pid",
    "port",
    "load",
    "vram",
    "in_flight",
    "where",
    "ttl",
)
HEADINGS = dict(COLUMNS)


class ModelTable(DataTable[Text]):
    """One row per model, keyed by name; `show_entries` touches only rows and cells that changed.

    When the table is too narrow for every column it drops the least useful ones (`DROP_FIRST`).
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._shown: dict[str, tuple[str, ...]] = {}
        self._states: dict[str, ServerState] = {}
        self.visible_columns: tuple[str, ...] = tuple(key for key, _ in COLUMNS)

    def on_mount(self) -> None:
        """Add the columns, and recolour the states when the theme changes."""
        for key in self.visible_columns:
            self.add_column(HEADINGS[key], key=key)
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._recolour())

    def on_resize(self) -> None:
        """Show as many columns as fit."""
        self._fit_columns()

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
        names = {entry.name for entry in entries}
        for gone in [name for name in self._shown if name not in names]:
            self.remove_row(gone)
            del self._shown[gone]
            self._states.pop(gone, None)
        for entry in entries:
            values = row_values(entry)
            self._states[entry.name] = entry.state
            before = self._shown.get(entry.name)
            self._shown[entry.name] = values
            if before is None:
                self.add_row(*self._cells(entry.name, values), key=entry.name)
                written += len(self.visible_columns)
                continue
            for (key, _), old, new in zip(COLUMNS, before, values, strict=True):
                if old != new and key in self.visible_columns:
                    self.update_cell(
                        entry.name, key, self._cell(entry.name, key, new), update_width=True
                    )
                    written += 1
        self._fit_columns()
        return written

    def _fit_columns(self) -> None:
        """Drop (or bring back) columns so the visible ones fit the table's width."""
        width = self.size.width - 2  # room for the vertical scrollbar
        if width <= 0:
            return
        keys = [key for key, _ in COLUMNS]
        widths = {key: self._column_width(index, key) for index, key in enumerate(keys)}
        visible = list(keys)
        for key in DROP_FIRST:
            if sum(widths[shown] for shown in visible) <= width:
                break
            visible.remove(key)
        if tuple(visible) != self.visible_columns:
            self.visible_columns = tuple(visible)
            self._rebuild()

    def _column_width(self, index: int, key: str) -> int:
        widest = max((cell_len(values[index]) for values in self._shown.values()), default=0)
        if key == "state":
            widest += 2  # the "● " before the state
        return max(cell_len(HEADINGS[key]), widest) + 2 * self.cell_padding

    def _rebuild(self) -> None:
        """Lay the table out again with the visible columns, keeping the cursor's row."""
        selected = self.selected_name
        self.clear(columns=True)
        for key in self.visible_columns:
            self.add_column(HEADINGS[key], key=key)
        for name, values in self._shown.items():
            self.add_row(*self._cells(name, values), key=name)
        if selected is not None:
            self.move_cursor(row=self.get_row_index(selected))

    def _cells(self, name: str, values: tuple[str, ...]) -> list[Text]:
        by_key = dict(zip((key for key, _ in COLUMNS), values, strict=True))
        return [self._cell(name, key, by_key[key]) for key in self.visible_columns]

    def _cell(self, name: str, key: str, value: str) -> Text:
        if key == "state":
            colour = self.app.theme_variables.get(STATE_COLOURS[self._states[name]], "")
            return Text(f"● {value}", style=colour)
        if key in ("name", "where", "pin"):
            return Text(value)
        return Text(value, justify="right")

    def _recolour(self) -> None:
        state_index = [key for key, _ in COLUMNS].index("state")
        for name, values in self._shown.items():
            self.update_cell(name, "state", self._cell(name, "state", values[state_index]))
