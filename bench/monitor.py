"""Monitor benchmark: what sampling and the Monitor pane cost, and whether memory stays flat.

Four figures, each with its baseline from the same run:

* sampler: CPU of the sampler thread at 1 Hz with 4 managed servers (stand-in servers from
  tests/monitor_server.py started by the manager, idle), over `--seconds`; beside it the whole
  process with the Monitor running vs the same engine and servers without it.
* app: a minimal app hosting the Monitor pane (the pane registry lands separately) in a
  detached tmux pane at 120x40, sampling at 1 Hz with the same 4 servers: the app process's CPU
  over `--app-seconds` with the pane visible, and with it hidden (the sampler still running).
* rss: muxtui's RSS over 1,800 samples (30 minutes at 1 Hz), taken at a 0.02 s interval so
  it runs in under a minute, with a consumer reading the 1 h window every sample as the pane
  does; growth from sample 100 (rings already allocated) to the end.
* graphs: CPU per redraw of 4 graphs x 600 points at 120x40, Textual's Sparkline vs the pane's
  braille HistoryGraph, in a headless app; an idle cycle's cost is subtracted.

    python bench/monitor.py [--seconds 30] [--app-seconds 60] [--only sampler,app,rss,graphs]

Targets (issue 10): sampler <= 0.5 % of one core; app with the pane visible <= 3 % of one core;
RSS growth over 30 min of sampling <= 5 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.startup import isolated_env  # noqa: E402
from muxtui.engine.config import CacheConfig, Config, LocalModelConfig, MonitorConfig  # noqa: E402
from muxtui.engine.core import Engine  # noqa: E402
from muxtui.engine.paths import Paths  # noqa: E402

SERVERS = 4
SCRIPT = REPO_ROOT / "tests" / "monitor_server.py"
WIDTH, HEIGHT = 120, 40
RSS_SAMPLES = 1800
RSS_WARMUP = 100
GRAPH_POINTS = 600
GRAPH_REDRAWS = 40


def bench_config(root: Path, interval: float) -> Config:
    model = root / "model.gguf"
    model.write_bytes(b"GGUF" + bytes(60))
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(SCRIPT))} --port {{port}}"
    return Config(
        local={
            f"model-{n}": LocalModelConfig(cmd=command, path=str(model)) for n in range(SERVERS)
        },
        cache=CacheConfig(max_models=SERVERS, ttl=0, stall_timeout=20, stop_grace=2),
        monitor=MonitorConfig(interval=interval),
    )


def make_paths(root: Path) -> Paths:
    return Paths(root / "config.toml", root / "data", root / "cache", root / "log")


async def start_servers(engine: Engine) -> None:
    await asyncio.gather(*(engine.servers.preload(f"model-{n}") for n in range(SERVERS)))


def thread_cpu(native_id: int) -> float:
    """User + system seconds of one thread of this process."""
    for thread in psutil.Process().threads():
        if thread.id == native_id:
            return thread.user_time + thread.system_time
    return 0.0


def process_cpu() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


# --- sampler -----------------------------------------------------------------------------------


async def sampler_cpu(root: Path, seconds: float) -> dict[str, float]:
    """Sampler thread CPU at 1 Hz, and the process with vs without the Monitor."""
    engine = Engine(bench_config(root, 1.0), make_paths(root), discover=False)
    try:
        await start_servers(engine)
        await asyncio.sleep(2.0)  # let the servers' start-up settle
        before = process_cpu()
        await asyncio.sleep(seconds)
        without = process_cpu() - before

        samples = engine.samples()
        await anext(samples)  # the sampler thread runs and has primed its readings
        thread = next(t for t in _threads() if t.name == "muxtui-monitor")
        assert thread.native_id is not None
        sampler_before, before = thread_cpu(thread.native_id), process_cpu()
        started = time.monotonic()
        taken = 0
        while time.monotonic() - started < seconds:
            await anext(samples)
            taken += 1
        elapsed = time.monotonic() - started
        sampler = thread_cpu(thread.native_id) - sampler_before
        with_monitor = process_cpu() - before
        await samples.aclose()
        latest = engine.latest_sample
        watched = len(latest.servers) if latest is not None else 0
    finally:
        await engine.aclose()
    return {
        "samples": taken,
        "servers": watched,
        "sampler_pct": 100 * sampler / elapsed,
        "process_with_pct": 100 * with_monitor / elapsed,
        "process_without_pct": 100 * without / seconds,
    }


def _threads() -> list[object]:
    import threading

    return list(threading.enumerate())


# --- app ---------------------------------------------------------------------------------------


def run_app_child(root: Path, visible: bool, ready_file: Path) -> int:
    """The minimal app hosting the Monitor pane (run inside tmux by `app_cpu`)."""
    from textual.app import App, ComposeResult
    from textual.widgets import Static

    from muxtui.tui.panes.monitor.pane import MonitorPane

    engine = Engine(bench_config(root, 1.0), make_paths(root), discover=False)

    class MonitorApp(App[None]):
        def compose(self) -> ComposeResult:
            yield MonitorPane(engine, id="monitor")
            yield Static("Monitor pane hidden", id="other")

        async def on_mount(self) -> None:
            pane = self.query_one(MonitorPane)
            self.query_one("#other").display = not visible
            pane.display = visible
            self.run_worker(self._prepare(pane))

        async def _prepare(self, pane: MonitorPane) -> None:
            await start_servers(engine)
            if not visible:  # the sampler runs either way; only the pane differs
                self.run_worker(self._drain())
            for _ in range(100):
                if (
                    engine.latest_sample is not None
                    and len(engine.latest_sample.servers) == SERVERS
                ):
                    break
                await asyncio.sleep(0.2)
            ready_file.write_text(str(os.getpid()))

        async def _drain(self) -> None:
            async for _sample in engine.samples():
                pass

        async def on_unmount(self) -> None:
            await engine.aclose()

    MonitorApp().run()
    return 0


def app_cpu(root: Path, visible: bool, seconds: float) -> dict[str, float]:
    """CPU of the app process (its own threads, not the servers) over `seconds`."""
    session = f"muxtui-monitor-bench-{os.getpid()}"
    ready = root / f"ready-{visible}"
    home = root / "home"
    home.mkdir(exist_ok=True)
    command = shlex.join(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--app-child",
            "visible" if visible else "hidden",
            "--root",
            str(root),
            "--ready-file",
            str(ready),
        ]
    )
    env = isolated_env(home)
    env["PYTHONPATH"] = str(REPO_ROOT)
    subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, check=False)
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", str(WIDTH), "-y", str(HEIGHT), command],
        check=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the app never became ready")
            time.sleep(0.1)
        time.sleep(0.5)
        app = psutil.Process(int(ready.read_text()))
        before = app.cpu_times()
        time.sleep(seconds)
        after = app.cpu_times()
        used = (after.user + after.system) - (before.user + before.system)
        return {"pct": 100 * used / seconds}
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, check=False)
        time.sleep(1.0)  # the app stops its servers on the way out
        ready.unlink(missing_ok=True)


# --- rss ---------------------------------------------------------------------------------------


async def rss_growth(root: Path) -> dict[str, float]:
    """RSS at sample RSS_WARMUP and at sample RSS_SAMPLES + RSS_WARMUP, sampling every 0.02 s."""
    engine = Engine(bench_config(root, 0.02), make_paths(root), discover=False)
    me = psutil.Process()
    checkpoints: list[tuple[int, int]] = []
    try:
        await start_servers(engine)
        taken = 0
        async for sample in engine.samples():
            taken += 1
            engine.monitor_series(3600.0, 240)  # what the pane reads each sample at 120 columns
            if taken == RSS_WARMUP or ((taken - RSS_WARMUP) % 300 == 0 and taken > RSS_WARMUP):
                checkpoints.append((taken, me.memory_info().rss))
            if taken >= RSS_WARMUP + RSS_SAMPLES:
                break
            assert len(sample.servers) == SERVERS or taken < 50
    finally:
        await engine.aclose()
    start_rss = checkpoints[0][1]
    return {
        "growth_mb": (checkpoints[-1][1] - start_rss) / 1e6,
        "start_mb": start_rss / 1e6,
        "path": " ".join(f"{(rss - start_rss) / 1e6:+.2f}" for _, rss in checkpoints[1:]),
    }


# --- graphs ------------------------------------------------------------------------------------


async def graph_cost() -> dict[str, float]:
    """CPU ms per redraw of 4 graphs x 600 points: Sparkline vs HistoryGraph (idle subtracted)."""
    import random

    from textual.app import App, ComposeResult
    from textual.containers import Horizontal
    from textual.widgets import Sparkline

    from muxtui.tui.panes.monitor.history_graph import HistoryGraph

    class Graphs(App[None]):
        def __init__(self, kind: str) -> None:
            super().__init__()
            self.kind = kind

        def compose(self) -> ComposeResult:
            with Horizontal():
                for _ in range(4):
                    if self.kind == "sparkline":
                        yield Sparkline([], classes="g")
                    else:
                        yield HistoryGraph(upper=100.0, classes="g")

        CSS = ".g { width: 1fr; height: 4; }"

    rng = random.Random(7)
    results = {}
    for kind in ("sparkline", "braille"):
        app = Graphs(kind)
        async with app.run_test(size=(WIDTH, HEIGHT)) as pilot:
            widgets = list(app.query(".g"))
            await pilot.pause()
            idle_before = time.process_time()
            for _ in range(GRAPH_REDRAWS):
                await pilot.pause()
            idle = (time.process_time() - idle_before) / GRAPH_REDRAWS
            data = [rng.uniform(0, 100) for _ in range(GRAPH_POINTS)]
            started = time.process_time()
            for _ in range(GRAPH_REDRAWS):
                data = [*data[1:], rng.uniform(0, 100)]
                for widget in widgets:
                    if isinstance(widget, Sparkline):
                        widget.data = data
                    elif isinstance(widget, HistoryGraph):
                        widget.show(tuple(data), GRAPH_POINTS)
                await pilot.pause()
            per_redraw = (time.process_time() - started) / GRAPH_REDRAWS
            results[kind] = 1000 * (per_redraw - idle)
    return results


# --- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--app-seconds", type=float, default=60.0)
    parser.add_argument("--only", default="sampler,app,rss,graphs")
    parser.add_argument("--app-child", choices=("visible", "hidden"), help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--ready-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.app_child:
        return run_app_child(Path(args.root), args.app_child == "visible", Path(args.ready_file))

    parts = set(args.only.split(","))
    print(
        f"cores: {os.cpu_count()}  python: {sys.version.split()[0]}  "
        f"{platform.machine()}  load: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    with tempfile.TemporaryDirectory(prefix="muxtui-monitor-bench-") as tmp:
        root = Path(tmp)
        if "sampler" in parts:
            found = asyncio.run(sampler_cpu(root, args.seconds))
            print(
                f"sampler at 1 Hz, {found['servers']:.0f} servers, {found['samples']:.0f} samples: "
                f"sampler thread {found['sampler_pct']:.3f} % of one core (target <= 0.5 %); "
                f"process {found['process_with_pct']:.3f} % with the Monitor vs "
                f"{found['process_without_pct']:.3f} % without"
            )
        if "app" in parts:
            if shutil.which("tmux") is None:
                print("app: skipped (needs tmux on PATH)")
            else:
                shown = app_cpu(root, True, args.app_seconds)
                hidden = app_cpu(root, False, args.app_seconds)
                print(
                    f"app at 1 Hz over {args.app_seconds:g} s, {WIDTH}x{HEIGHT}, "
                    f"{SERVERS} servers: "
                    f"pane visible {shown['pct']:.2f} % of one core (target <= 3 %); "
                    f"pane hidden {hidden['pct']:.2f} %"
                )
        if "rss" in parts:
            found_rss = asyncio.run(rss_growth(root))
            print(
                f"RSS over {RSS_SAMPLES} samples (0.02 s interval, {SERVERS} servers): "
                f"{found_rss['growth_mb']:+.2f} MB from {found_rss['start_mb']:.1f} MB "
                f"(target <= 5 MB); every 300 samples: {found_rss['path']}"
            )
        if "graphs" in parts:
            costs = asyncio.run(graph_cost())
            print(
                f"graphs, 4 x {GRAPH_POINTS} points at {WIDTH}x{HEIGHT}, CPU per redraw: "
                f"Sparkline {costs['sparkline']:.2f} ms, braille HistoryGraph "
                f"{costs['braille']:.2f} ms"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
