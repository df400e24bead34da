"""The sampler: one thread that measures the machine, the model servers and the GPUs.

psutil and NVML block, so they run here and never on the event loop. Each sample is recorded
in the ring buffers, judged by the alert rules, appended to the sample log, and handed to
`deliver` (which the Monitor points at the event loop). What to watch (the servers and their
pids, model files, what the servers report about themselves) comes from `watched`, a callable
returning an immutable `Watched`, so the sampler knows nothing of the server manager.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

import psutil

from muxtui.engine.config import MonitorConfig
from muxtui.engine.monitor import alerts as rules
from muxtui.engine.monitor.alerts import MIB, AlertBook, StoppedServer
from muxtui.engine.monitor.gpu import GpuReader, apple_silicon, with_attribution
from muxtui.engine.monitor.monitor import Watched
from muxtui.engine.monitor.sample_log import SampleLog
from muxtui.engine.monitor.samples import Alert, GpuSample, Sample, ServerSample
from muxtui.engine.monitor.series import History
from muxtui.engine.monitor.server_metrics import ServerMetrics
from muxtui.engine.monitor.trees import ProcessTrees, TreeFigures, process_memory

log = logging.getLogger(__name__)

BASELINE_AFTER_S = 30.0  # muxtui's own RSS baseline is taken once start-up has settled
LEAK_CHECKS = 20  # the leak rule runs this many times per window (a fit costs a few points)
FOREIGN_NOTE = (
    "servers started by another muxtui are shown when their command line names a model "
    "file this config knows; others are not identified"
)


class Sampler:
    """Takes a sample every `settings.interval` seconds on its own thread."""

    def __init__(
        self,
        settings: MonitorConfig,
        watched: Callable[[], Watched],
        deliver: Callable[[Sample], None],
        *,
        sample_log: SampleLog | None = None,
    ) -> None:
        self.settings = settings
        self.history = History(settings.interval)
        self.gpu = GpuReader()
        self._watched = watched
        self._deliver = deliver
        self._log = sample_log
        self._trees = ProcessTrees()
        self._book = AlertBook(BASELINE_AFTER_S)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_swap: tuple[float, int] | None = None  # (time, bytes swapped in so far)
        self._previous: Sample | None = None
        self._foreign_active: dict[str, float] = {}
        self._leaks: dict[str, Alert] = {}
        self._leak_checked_at = float("-inf")
        self._pid = os.getpid()

    @property
    def thread(self) -> threading.Thread | None:
        """The sampling thread while it runs."""
        return self._thread

    def start(self) -> None:
        """Start the sampling thread (the first sample comes one interval later)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="muxtui-monitor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for it (blocking: call it from a worker thread)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def prime(self) -> None:
        """Open NVML and take the first readings that rates and percentages are measured from."""
        self.gpu.open()
        psutil.cpu_percent(None)
        self._last_swap = (time.time(), psutil.swap_memory().sin)

    def _run(self) -> None:
        try:
            self.prime()
            interval = self.settings.interval
            next_at = time.monotonic() + interval
            while not self._stop.wait(max(next_at - time.monotonic(), 0.0)):
                try:
                    sample = self.take()
                except Exception:  # one bad sample must not end the monitor
                    log.exception("monitor sample failed")
                else:
                    self._deliver(sample)
                next_at += interval
                if next_at < time.monotonic():  # fell behind (suspend, slow NVML): skip ahead
                    next_at = time.monotonic() + interval
        finally:
            self.gpu.close()
            if self._log is not None:
                self._log.close()

    def take(self) -> Sample:
        """Measure everything once, record it, and judge it."""
        now = time.time()
        memory = psutil.virtual_memory()
        swap = psutil.swap_memory()
        swap_in_rate = 0.0
        if self._last_swap is not None and now > self._last_swap[0]:
            swap_in_rate = max(swap.sin - self._last_swap[1], 0) / (now - self._last_swap[0])
        self._last_swap = (now, swap.sin)
        watched = self._watched()
        servers, gpus = self._servers_and_gpus(watched, now)
        notes = [] if servers or not watched.model_paths else [FOREIGN_NOTE]
        if self._log is not None and self._log.error:
            notes.append(self._log.error)
        sample = Sample(
            ts=now,
            ram_total=memory.total,
            ram_available=memory.available,
            ram_used=memory.total - memory.available,
            swap_total=swap.total,
            swap_used=swap.used,
            swap_in_per_s=swap_in_rate,
            cpu_percent=psutil.cpu_percent(None),
            process_rss=process_memory(self._pid)[0],
            servers=servers,
            gpus=gpus,
            gpu_status=self.gpu.status,
            unified_memory=apple_silicon(),
            notes=tuple(notes),
        )
        self.history.record(sample)
        sample = replace(sample, alerts=self._judge(sample, watched))
        self._previous = sample
        if self._log is not None:
            self._log.write(sample)
        return sample

    def _servers_and_gpus(
        self, watched: Watched, now: float
    ) -> tuple[tuple[ServerSample, ...], tuple[GpuSample, ...]]:
        own = {ref.pid: ref for ref in watched.servers}
        figures = self._trees.measure(own, time.monotonic(), dict(watched.model_paths))
        own_pids = frozenset(pid for ref in own.values() for pid in _pids(figures, ref.pid))
        names = {ref.name for ref in own.values()}
        foreign = [s for s in self._trees.foreign(own_pids) if s.name not in names]
        members: list[tuple[str, int, int | None, bool]] = [
            (ref.name, ref.pid, ref.port, False) for ref in own.values() if ref.pid in figures
        ]
        for server in foreign:
            if server.pid in figures and server.name not in {m[0] for m in members}:
                members.append((server.name, server.pid, server.port, True))
        trees = {name: figures[pid].pids for name, pid, _, _ in members}
        gpus = tuple(with_attribution(gpu, trees) for gpu in self.gpu.read())
        vram: dict[str, int] = {}
        for gpu in gpus:
            for name, amount in gpu.vram_by_model:
                vram[name] = vram.get(name, 0) + amount
        servers = []
        for name, pid, port, is_foreign in members:
            tree = figures[pid]
            said = watched.metrics.get(name, ServerMetrics())
            if is_foreign and (said.requests_processing or said.tokens_per_s):
                self._foreign_active[name] = now
            servers.append(
                ServerSample(
                    name=name,
                    pid=pid,
                    rss=tree.rss,
                    rss_anon=tree.rss_anon,
                    rss_file=tree.rss_file,
                    cpu_percent=tree.cpu_percent,
                    vram=vram.get(name, 0),
                    processes=len(tree.pids),
                    foreign=is_foreign,
                    port=port,
                    requests_processing=said.requests_processing,
                    tokens_per_s=said.tokens_per_s,
                    kv_used=said.kv_used,
                )
            )
        return tuple(sorted(servers, key=lambda s: (s.foreign, s.name))), gpus

    def _judge(self, sample: Sample, watched: Watched) -> tuple[Alert, ...]:
        """Every alert raised by this sample and the series before it."""
        settings = self.settings
        history = self.history
        now = sample.ts
        raised: list[Alert | None] = [
            rules.memory_pressure(
                sample.ram_total, sample.ram_available, settings.ram_available_pct
            )
        ]
        raised.append(
            rules.swapping(
                *history.system("swap_in", rules.SWAP_WINDOW_S),
                settings.swap_in_mb_s * 1e6,
                rules.SWAP_WINDOW_S,
            )
        )
        raised.extend(self._leak_alerts(sample, watched))
        self._book.note_rss(now, sample.process_rss)
        raised.append(
            rules.self_growth(
                sample.process_rss, self._book.baseline, settings.self_growth_mb * MIB
            )
        )
        self._book.note_stopped(self._stops(sample), now)
        for stop in self._book.stopped:
            times, used = history.gpu(stop.gpu_index, "memory_used", now - stop.stopped_at + 1)
            raised.append(rules.vram_not_returned(stop, times, used, settings.vram_return_s))
        for gpu in sample.gpus:
            _, temperatures = history.gpu(gpu.index, "temperature", rules.SWAP_WINDOW_S)
            raised.append(rules.gpu_temperature(gpu, temperatures, settings.gpu_temp_margin_c))
            _, powers = history.gpu(gpu.index, "power", rules.SWAP_WINDOW_S)
            raised.append(rules.gpu_power(gpu, powers, settings.gpu_power_pct))
        return self._book.stamp([alert for alert in raised if alert is not None], now)

    def _leak_alerts(self, sample: Sample, watched: Watched) -> list[Alert]:
        """The leak rule per server, refitted a few times per window (kept in between)."""
        window = self.settings.leak_window_s
        if sample.ts - self._leak_checked_at < window / LEAK_CHECKS:
            live = {server.name for server in sample.servers}
            return [alert for name, alert in self._leaks.items() if name in live]
        self._leak_checked_at = sample.ts
        active = {ref.name: ref.active_at for ref in watched.servers}
        leaks = {}
        for server in sample.servers:
            said = watched.metrics.get(server.name)
            if said is not None and said.requests_processing:
                continue
            if server.foreign:
                # Idle is known only from what the server reports about itself.
                if said is None:
                    continue
                idle_since = self._foreign_active.get(server.name, 0.0)
            else:
                idle_since = active.get(server.name, 0.0)
            times, rss = self.history.server(server.name, "rss_anon", window)
            alert = rules.server_leak(
                server.name, times, rss, idle_since, window, self.settings.leak_mb * MIB
            )
            if alert is not None:
                leaks[server.name] = alert
        self._leaks = leaks
        return list(leaks.values())

    def _stops(self, sample: Sample) -> list[StoppedServer]:
        """Servers that held VRAM in the previous sample and are gone now, per GPU."""
        previous = self._previous
        if previous is None:
            return []
        live = {server.name for server in sample.servers}
        stops = []
        for gpu in previous.gpus:
            for name, held in gpu.vram_by_model:
                if name not in live:
                    stops.append(StoppedServer(name, gpu.index, sample.ts, gpu.memory_used, held))
        return stops


def _pids(figures: Mapping[int, TreeFigures], root: int) -> frozenset[int]:
    tree = figures.get(root)
    return tree.pids if tree is not None else frozenset({root})
