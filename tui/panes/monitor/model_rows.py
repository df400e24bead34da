"""The Monitor's table: one row per model server (RSS, VRAM, CPU, tok/s, KV) plus "other" VRAM.

Rows are keyed by model name; a new sample adds and removes rows and rewrites only the cells
whose text changed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.widgets import DataTable

from muxtui.tui.display import NONE, format_bytes

if TYPE_CHECKING:
    from muxtui.engine.monitor.samples import Sample, ServerSample
    from muxtui.engine.monitor.series import SeriesWindow

COLUMNS = (
    ("model", "model"),
    ("pid", "pid"),
    ("rss", "RSS"),
    ("split", "anon / file"),
    ("vram", "VRAM"),
    ("cpu", "CPU"),
    ("tokens", "tok/s"),
    ("kv", "KV"),
)
BARS = "▁▂▃▄▅▆▇█"
SPARK_POINTS = 8
EMPTY_KEY = "-none-"


def spark(values: tuple[float, ...]) -> str:
    """The last few values as block bars scaled to their own peak, e.g. '▁▃▇'."""
    recent = values[-SPARK_POINTS:]
    peak = max(recent, default=0.0)
    if peak <= 0:
        return ""
    return "".join(BARS[min(int(v / peak * (len(BARS) - 1) + 0.5), len(BARS) - 1)] for v in recent)


def server_cells(server: ServerSample, tokens: tuple[float, ...]) -> tuple[str, ...]:
    """The row of one model server."""
    split = NONE
    if server.rss_anon is not None and server.rss_file is not None:
        split = f"{format_bytes(server.rss_anon)} / {format_bytes(server.rss_file)}"
    rate = NONE
    if server.tokens_per_s is not None:
        rate = f"{spark(tokens)} {server.tokens_per_s:.1f}".strip()
    kv = NONE if server.kv_used is None else f"{100 * server.kv_used:.0f} %"
    name = f"{server.name} (other muxtui)" if server.foreign else server.name
    return (
        name,
        str(server.pid),
        format_bytes(server.rss),
        split,
        format_bytes(server.vram),
        f"{server.cpu_percent:.0f} %",
        rate,
        kv,
    )


class ModelRows(DataTable[str]):
    """Model servers with their memory, CPU and throughput."""

    def on_mount(self) -> None:
        """Columns, and a placeholder row until servers run."""
        self.cursor_type = "row"
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    def show(self, sample: Sample, series: SeriesWindow) -> None:
        """Bring the rows in line with `sample`, touching only cells that changed."""
        wanted: dict[str, tuple[str, ...]] = {}
        for server in sample.servers:
            tokens = series.servers.get(server.name, {}).get("tokens_per_s", ())
            wanted[server.name] = server_cells(server, tokens)
        for gpu in sample.gpus:
            if gpu.vram_other:
                label = f"other (GPU {gpu.index})"
                wanted[f"other:{gpu.index}"] = (
                    label,
                    NONE,
                    NONE,
                    NONE,
                    format_bytes(gpu.vram_other),
                    NONE,
                    NONE,
                    NONE,
                )
        if not wanted:
            wanted[EMPTY_KEY] = ("no model servers running", "", "", "", "", "", "", "")
        for key in [row.value for row in self.rows if row.value not in wanted]:
            if key is not None:
                self.remove_row(key)
        for key, cells in wanted.items():
            if key not in self.rows:
                self.add_row(*cells, key=key)
                continue
            current = self.get_row(key)
            for (column, _), old, new in zip(COLUMNS, current, cells, strict=True):
                if str(old) != new:
                    self.update_cell(key, column, new, update_width=True)

    def cell_text(self, key: str, column: str) -> str:
        """The text of one cell (for tests)."""
        return str(self.get_cell(key, column))
