"""The Monitor pane: RAM, swap, CPU and GPU graphs, a row per model, the alerts.

It consumes the engine's samples through its own worker, started when the pane is shown and
cancelled when it is hidden, so a hidden pane costs nothing and needs nothing from the app's
bridge. Each new sample repaints once (in one batch); nothing repaints between samples.
"""

from __future__ import annotations

import time
from contextlib import aclosing
from typing import TYPE_CHECKING, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Label, Static
from textual.worker import Worker

from muxtui.engine.errors import MuxtuiError
from muxtui.tui.panes.monitor.history_graph import HistoryGraph
from muxtui.tui.panes.monitor.model_rows import ModelRows

if TYPE_CHECKING:
    from muxtui.engine.core import Engine
    from muxtui.engine.monitor.samples import GpuSample, Sample
    from muxtui.engine.monitor.series import SeriesWindow

GIB = 2**30
WINDOWS: tuple[tuple[float, str], ...] = ((60.0, "1 min"), (600.0, "10 min"), (3600.0, "1 h"))
GPU_FIGURES = ("util", "memory_used", "temperature", "power")


class GraphCard(Vertical):
    """A title line with the current figure above its history graph."""

    def __init__(self, title: str, *, upper: float, id: str | None = None) -> None:
        super().__init__(id=id, classes="graph-card")
        self.title_label = Label(title, classes="graph-title", markup=False)
        self.graph = HistoryGraph(upper=upper)

    def compose(self) -> ComposeResult:
        """Title above graph."""
        yield self.title_label
        yield self.graph

    def show(self, title: str, values: tuple[float, ...], points: int, upper: float) -> None:
        """New figures: the title and the graph."""
        self.title_label.update(title)
        self.graph.show(values, points, upper)


class MonitorPane(Widget):
    """Live memory, CPU and GPU graphs, model rows and alerts; samples only while visible."""

    DEFAULT_CSS = """
    MonitorPane { height: 1fr; }
    MonitorPane #monitor-scroll { height: 1fr; }
    MonitorPane .graph-row { height: auto; }
    MonitorPane .graph-card { width: 1fr; height: auto; padding: 0 1; }
    MonitorPane .graph-title {
        width: 1fr; height: 1; color: $text-muted; text-wrap: nowrap; text-overflow: ellipsis;
    }
    MonitorPane #monitor-gpus { height: auto; }
    MonitorPane #monitor-window { color: $text-muted; padding: 0 1; }
    MonitorPane #monitor-gpu-status { padding: 0 1; color: $text-muted; }
    MonitorPane .section-title { padding: 1 1 0 1; text-style: bold; }
    MonitorPane #monitor-models { height: auto; max-height: 12; margin: 0 1; }
    MonitorPane #monitor-alerts { padding: 0 1; }
    MonitorPane #monitor-alerts.raised { color: $warning; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "w",
            "next_window",
            "Window",
            id="monitor-window",
            tooltip="Switch the graphs' time window: 1 min, 10 min, 1 h",
        )
    ]

    window_index: reactive[int] = reactive(0)

    def __init__(self, engine: Engine, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.engine = engine
        self.latest: Sample | None = None
        self.repaints = 0  # samples painted (the bench and tests count them)
        self._worker: Worker[None] | None = None
        self._gpu_rows: dict[int, dict[str, GraphCard]] = {}

    @property
    def window_s(self) -> float:
        """The graphs' time window in seconds."""
        return WINDOWS[self.window_index][0]

    def compose(self) -> ComposeResult:
        """Window switch, system graphs, GPU graphs (or why there are none), models, alerts."""
        with VerticalScroll(id="monitor-scroll"):
            yield Label(self._window_text(), id="monitor-window", markup=False)
            with Horizontal(classes="graph-row", id="monitor-system"):
                yield GraphCard("RAM", upper=1.0, id="graph-ram")
                yield GraphCard("Swap", upper=1.0, id="graph-swap")
                yield GraphCard("CPU", upper=100.0, id="graph-cpu")
            yield Vertical(id="monitor-gpus")
            yield Static("GPU: waiting for the first sample", id="monitor-gpu-status")
            yield Label("Models", classes="section-title")
            yield ModelRows(id="monitor-models")
            yield Label("Alerts", classes="section-title")
            yield Static("no alerts", id="monitor-alerts", markup=False)

    # --- sampling while visible ----------------------------------------------------------------

    def on_show(self) -> None:
        """Visible: start consuming samples."""
        if self._worker is None or self._worker.is_finished:
            self._worker = self.run_worker(
                self._consume(), group="monitor-samples", exclusive=True, exit_on_error=False
            )

    def on_hide(self) -> None:
        """Hidden: stop consuming samples (the engine keeps sampling for alerts and the log)."""
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None

    @property
    def sampling(self) -> bool:
        """Whether the pane's worker is consuming samples."""
        return self._worker is not None and not self._worker.is_finished

    async def _consume(self) -> None:
        try:
            async with aclosing(self.engine.samples()) as samples:
                async for sample in samples:
                    self.show_sample(sample)
        except MuxtuiError as exc:
            self.query_one("#monitor-gpu-status", Static).update(f"Monitor stopped: {exc}")

    # --- painting ------------------------------------------------------------------------------

    def show_sample(self, sample: Sample) -> None:
        """Paint one sample: every graph, the model rows and the alerts, in one batch."""
        self.latest = sample
        self.repaints += 1
        series = self.engine.monitor_series(self.window_s, self._graph_points())
        with self.app.batch_update():
            self.query_one("#monitor-window", Label).update(self._window_text())
            self._paint_system(sample, series)
            self._paint_gpus(sample, series)
            self.query_one(ModelRows).show(sample, series)
            self._paint_alerts(sample)

    def _graph_points(self) -> int:
        """Points the widest graph can show (two a cell): the engine sends no more."""
        widest = max((graph.size.width for graph in self.query(HistoryGraph)), default=0)
        return 2 * widest if widest > 0 else 0

    def action_next_window(self) -> None:
        """Switch to the next time window."""
        self.window_index = (self.window_index + 1) % len(WINDOWS)

    def watch_window_index(self) -> None:
        """Relabel, and redraw the last sample over the new window."""
        if not self.is_mounted:
            return
        if self.latest is not None:
            self.show_sample(self.latest)
        else:
            self.query_one("#monitor-window", Label).update(self._window_text())

    def _window_text(self) -> str:
        names = [
            f"[{label}]" if i == self.window_index else label
            for i, (_, label) in enumerate(WINDOWS)
        ]
        text = "window: " + "  ".join(names) + "   (w switches)"
        if self.latest is not None:
            text += f"   ·   muxtui itself: {self.latest.process_rss / 2**20:.0f} MiB RSS"
        return text

    def _paint_system(self, sample: Sample, series: SeriesWindow) -> None:
        points = series.points
        system = series.system
        self.query_one("#graph-ram", GraphCard).show(
            f"RAM {_gib(sample.ram_used)} / {_gib(sample.ram_total)} GiB · "
            f"{_gib(sample.ram_available)} available",
            system.get("ram_used", ()),
            points,
            float(sample.ram_total),
        )
        if sample.swap_total:
            swap_title = (
                f"Swap {_gib(sample.swap_used)} / {_gib(sample.swap_total)} GiB · "
                f"in {sample.swap_in_per_s / 1e6:.1f} MB/s"
            )
        else:
            swap_title = "Swap: none configured"
        self.query_one("#graph-swap", GraphCard).show(
            swap_title, system.get("swap_used", ()), points, float(max(sample.swap_total, 1))
        )
        self.query_one("#graph-cpu", GraphCard).show(
            f"CPU {sample.cpu_percent:.0f} %", system.get("cpu", ()), points, 100.0
        )

    def _paint_gpus(self, sample: Sample, series: SeriesWindow) -> None:
        status = self.query_one("#monitor-gpu-status", Static)
        status.display = not sample.gpus
        if not sample.gpus:
            status.update(f"GPU: {sample.gpu_status or 'no GPU figures'}")
        for gpu in sample.gpus:
            cards = self._gpu_rows.get(gpu.index)
            if cards is None:
                cards = self._mount_gpu(gpu)
            figures = series.gpus.get(gpu.index, {})
            for name, (title, upper) in _gpu_titles(gpu).items():
                cards[name].show(title, figures.get(name, ()), series.points, upper)

    def _mount_gpu(self, gpu: GpuSample) -> dict[str, GraphCard]:
        cards = {name: GraphCard(name, upper=1.0) for name in GPU_FIGURES}
        row = Horizontal(*cards.values(), classes="graph-row", id=f"monitor-gpu-{gpu.index}")
        self.query_one("#monitor-gpus", Vertical).mount(row)
        self._gpu_rows[gpu.index] = cards
        return cards

    def _paint_alerts(self, sample: Sample) -> None:
        alerts = self.query_one("#monitor-alerts", Static)
        alerts.set_class(bool(sample.alerts), "raised")
        if not sample.alerts:
            alerts.update("no alerts")
            return
        alerts.update(
            "\n".join(
                f"⚠ {alert.subject}: {alert.message} "
                f"(since {time.strftime('%H:%M:%S', time.localtime(alert.since))})"
                for alert in sample.alerts
            )
        )


def _gpu_titles(gpu: GpuSample) -> dict[str, tuple[str, float]]:
    """Per GPU graph: its title with the current figure, and its fixed upper bound."""
    util = "–" if gpu.util_percent is None else f"{gpu.util_percent:.0f} %"
    temperature = "–" if gpu.temperature_c is None else f"{gpu.temperature_c:.0f} °C"
    power = "–" if gpu.power_w is None else f"{gpu.power_w:.0f} W"
    if gpu.power_w is not None and gpu.power_limit_w:
        power += f" / {gpu.power_limit_w:.0f} W"
    other = f" · other {_gib(gpu.vram_other)} GiB" if gpu.vram_other else ""
    return {
        "util": (f"GPU {gpu.index} {gpu.name} · util {util}", 100.0),
        "memory_used": (
            f"VRAM {_gib(gpu.memory_used)} / {_gib(gpu.memory_total)} GiB{other}",
            float(max(gpu.memory_total, 1)),
        ),
        "temperature": (f"Temp {temperature}", max(gpu.slowdown_temperature_c or 0.0, 100.0)),
        "power": (f"Power {power}", gpu.power_limit_w or 500.0),
    }


def _gib(count: int) -> str:
    return f"{count / GIB:.1f}"
