"""Pilot tests of the Monitor pane, hosted in a small app with a real engine sampling."""

from __future__ import annotations

import shlex
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.pilot import Pilot

from muxtui.engine.config import CacheConfig, Config, LocalModelConfig, MonitorConfig
from muxtui.engine.core import Engine
from muxtui.engine.paths import Paths
from muxtui.tui.panes.monitor.history_graph import HistoryGraph, braille_rows, dot_levels
from muxtui.tui.panes.monitor.model_rows import BARS, ModelRows
from muxtui.tui.panes.monitor.pane import GraphCard, MonitorPane
from tests.conftest import REPO_ROOT

SCRIPT = shlex.quote(str(REPO_ROOT / "tests" / "monitor_server.py"))


class PaneApp(App[None]):
    """Just the Monitor pane, as the pane registry will mount it."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine

    def compose(self) -> ComposeResult:
        yield MonitorPane(self.engine, id="monitor")


@pytest.fixture
async def engine(paths: Paths, tmp_path: Path) -> AsyncIterator[Engine]:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF" + bytes(60))
    command = f"{shlex.quote(sys.executable)} {SCRIPT} --port {{port}} --metrics --tokens-per-s 40"
    config = Config(
        local={"gemma": LocalModelConfig(cmd=command, path=str(model))},
        cache=CacheConfig(ttl=0, stall_timeout=10.0, stop_grace=2.0),
        # Every sample raises the memory-pressure alert: available is always below 100 %.
        monitor=MonitorConfig(interval=0.5, ram_available_pct=100.0),
    )
    made = Engine(config, paths, discover=False)
    yield made
    await made.aclose()


async def wait_for(pilot: Pilot[None], done: Callable[[], bool], what: str) -> None:
    """Let the app run until `done()` holds (bounded by count)."""
    for _ in range(400):
        if done():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"never: {what}")


def graph_text(app: PaneApp, card_id: str) -> list[str]:
    return app.query_one(f"#{card_id}", GraphCard).graph.text_rows()


async def test_graphs_change_between_samples_and_the_alert_is_listed(engine: Engine) -> None:
    await engine.servers.preload("gemma")
    app = PaneApp(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = app.query_one(MonitorPane)
        await wait_for(pilot, lambda: pane.repaints >= 1, "a first sample")
        first_ram = graph_text(app, "graph-ram")
        first_values = app.query_one("#graph-cpu", GraphCard).graph.values
        assert any(row.strip("\u2800") for row in first_ram)  # something is drawn
        await wait_for(pilot, lambda: pane.repaints >= 3, "two more samples")
        assert graph_text(app, "graph-ram") != first_ram
        assert len(app.query_one("#graph-cpu", GraphCard).graph.values) > len(first_values)

        alerts = str(app.query_one("#monitor-alerts").render())
        assert "⚠ RAM: only" in alerts and "available" in alerts
        title = str(app.query_one("#graph-cpu", GraphCard).title_label.render())
        assert title.startswith("CPU ") and title.endswith(" %")

        rows = app.query_one(ModelRows)
        await wait_for(pilot, lambda: "gemma" in rows.rows, "gemma's row")
        pid = next(e.pid for e in engine.list_models() if e.name == "gemma")
        assert rows.cell_text("gemma", "pid") == str(pid)
        assert rows.cell_text("gemma", "rss").endswith("MiB")
        await wait_for(pilot, lambda: rows.cell_text("gemma", "kv") == "25 %", "KV use")
        await wait_for(pilot, lambda: rows.cell_text("gemma", "tokens")[0] in BARS, "tok/s bars")

        latest = engine.latest_sample
        status = app.query_one("#monitor-gpu-status")
        if latest is not None and not latest.gpus:  # without GPUs the reason shows, not a box
            assert status.display
            assert str(status.render()) == f"GPU: {latest.gpu_status}"


async def test_window_switch_and_no_sampling_while_hidden(engine: Engine) -> None:
    app = PaneApp(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = app.query_one(MonitorPane)
        await wait_for(pilot, lambda: pane.repaints >= 1, "a first sample")
        graph = app.query_one("#graph-cpu", GraphCard).graph
        # 1 min at 0.5 s is 120 samples; the engine thins them to what the graph can draw.
        assert pane.window_s == 60
        assert graph.points <= 2 * graph.size.width and len(graph.values) <= graph.points
        app.query_one(ModelRows).focus()
        await pilot.press("w")
        assert "[10 min]" in str(app.query_one("#monitor-window").render())
        assert pane.window_s == 600 and graph.points <= 2 * graph.size.width

        pane.display = False
        await wait_for(pilot, lambda: not pane.sampling, "the worker to stop when hidden")
        painted = pane.repaints
        taken = engine.latest_sample
        await wait_for(pilot, lambda: engine.latest_sample is not taken, "a sample while hidden")
        await pilot.pause(0.1)
        assert pane.repaints == painted

        pane.display = True
        await wait_for(pilot, lambda: pane.repaints > painted, "painting again once shown")


def test_braille_graph_keeps_fixed_bounds_and_aligns_to_the_right() -> None:
    # 3 % CPU over a 0-100 % box stays a sliver at the bottom (Sparkline would fill the box).
    levels = dot_levels((3.0, 3.0, 3.0, 3.0), points=4, columns=4, lower=0, upper=100, height=2)
    assert levels == [1, 1, 1, 1]
    # Two values in a four-slot window fill only the right half.
    assert dot_levels((50.0, 100.0), 4, 4, 0, 100, 1) == [0, 0, 2, 4]
    assert braille_rows([0, 0, 2, 4], 1) == ["\u2800\u28fc"]  # right cell: 2 dots left, 4 right
    # Peaks survive when many points share a column.
    assert dot_levels((0.0,) * 99 + (100.0,), 100, 2, 0, 100, 1) == [0, 4]


async def test_graph_redraws_new_data_over_fixed_bounds() -> None:
    class GraphApp(App[None]):
        def compose(self) -> ComposeResult:
            yield HistoryGraph(upper=10.0)

    app = GraphApp()
    async with app.run_test(size=(40, 6)) as pilot:
        graph = app.query_one(HistoryGraph)
        graph.show((1.0, 5.0, 7.0), 3)
        await pilot.pause()
        drawn = graph.text_rows()
        assert len(drawn) == 4 and all(len(row) == 40 for row in drawn)  # 4 rows by default
        assert drawn[0].strip("\u2800") == ""  # 7 of 10: 11 of 16 dots, the top row empty
        graph.show((1.0, 5.0, 10.0), 3)
        await pilot.pause()
        assert graph.text_rows() != drawn
        assert graph.text_rows()[0].strip("\u2800") != ""  # 10 of 10 reaches the top


async def test_a_gpu_gets_its_four_graphs_and_other_vram_its_row(engine: Engine) -> None:
    from muxtui.engine.monitor.samples import GpuSample, Sample, ServerSample

    gib = 2**30
    gpu = GpuSample(
        index=0,
        name="RTX 3090",
        util_percent=45.0,
        memory_used=20 * gib,
        memory_total=24 * gib,
        temperature_c=67.0,
        power_w=280.0,
        power_limit_w=350.0,
        slowdown_temperature_c=90.0,
        processes=((4101, 18 * gib),),
        vram_by_model=(("qwen", 18 * gib),),
        vram_other=2 * gib,
    )
    qwen = ServerSample("qwen", 4100, gib, gib // 2, gib // 2, 12.0, 18 * gib, processes=2)
    sample = Sample(1.0, 32 * gib, 16 * gib, 16 * gib, 0, 0, 0.0, 5.0, 50 * 2**20, (qwen,), (gpu,))
    app = PaneApp(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = app.query_one(MonitorPane)
        await pilot.pause()
        pane.on_hide()  # paint only what this test hands it
        assert not pane.sampling
        pane.show_sample(sample)
        await pilot.pause()
        row = app.query_one("#monitor-gpu-0")
        titles = [str(card.title_label.render()) for card in row.query(GraphCard)]
        assert titles == [
            "GPU 0 RTX 3090 · util 45 %",
            "VRAM 20.0 / 24.0 GiB · other 2.0 GiB",
            "Temp 67 °C",
            "Power 280 W / 350 W",
        ]
        assert not app.query_one("#monitor-gpu-status").display
        rows = app.query_one(ModelRows)
        assert rows.cell_text("qwen", "vram") == "18.0 GiB"
        assert rows.cell_text("other:0", "model") == "other (GPU 0)"
        assert rows.cell_text("other:0", "vram") == "2.0 GiB"
        pane.show_sample(sample)  # the same GPU again: no second row of graphs
        await pilot.pause()
        assert len(app.query(".graph-row")) == 2
