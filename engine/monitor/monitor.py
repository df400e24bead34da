"""The Monitor: the sampler thread, the event loop's side of it, and what consumers read.

Started on first use and run until the engine closes. The loop side keeps the `Watched`
snapshot the sampler reads (servers from the engine's model entries, refreshed when a server
changes state), reads the servers' own `/metrics` and `/slots`, and hands every sample to each
`samples()` consumer and, as a `SampleTaken` event, to the engine's listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from muxtui.engine.config import MonitorConfig
from muxtui.engine.errors import ConfigError
from muxtui.engine.events import ModelEntry, ModelsChanged, SampleTaken, ServerStateChanged
from muxtui.engine.monitor.samples import Alert, Sample
from muxtui.engine.monitor.series import SeriesWindow
from muxtui.engine.monitor.server_metrics import MetricsTarget, ServerMetrics, ServerMetricsReader

if TYPE_CHECKING:
    from muxtui.engine.monitor.sampler import Sampler

# psutil, NVML and the sampler are imported when sampling starts, so importing the engine
# (every command, the app's first frame) does not pay for them.

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerRef:
    """A server this muxtui runs: its model name, root pid, port and last activity."""

    name: str
    pid: int
    port: int | None = None
    active_at: float = 0.0  # epoch seconds of its last request or state change


@dataclass(frozen=True)
class Watched:
    """What the sampler looks at; replaced (never changed) by the event loop's side."""

    servers: tuple[ServerRef, ...] = ()
    model_paths: tuple[tuple[str, str], ...] = ()  # (name, file) to recognise other servers
    metrics: Mapping[str, ServerMetrics] = field(default_factory=dict)


class Monitor:
    """Samples memory, CPU and GPUs on a thread; consumers iterate `samples()`."""

    def __init__(
        self,
        settings: MonitorConfig,
        entries: Callable[[], Iterable[ModelEntry]],
        emit: Callable[[object], None],
    ) -> None:
        self.settings = settings
        self._entries = entries
        self._emit = emit
        self._watched = Watched()
        self._stale = True
        self._active: dict[str, float] = {}
        self._sampler: Sampler | None = None
        self._metrics = ServerMetricsReader()
        self._metrics_task: asyncio.Task[None] | None = None
        self._consumers: list[asyncio.Queue[Sample | None]] = []
        self._starting: asyncio.Lock | None = None
        self._closed = False
        self.latest: Sample | None = None

    # --- what consumers read -------------------------------------------------------------------

    @property
    def alerts(self) -> tuple[Alert, ...]:
        """The alerts raised by the latest sample."""
        return self.latest.alerts if self.latest is not None else ()

    @property
    def sampler_thread_alive(self) -> bool:
        """Whether the sampling thread runs."""
        sampler = self._sampler
        return sampler is not None and sampler.thread is not None and sampler.thread.is_alive()

    def series(self, window_s: float, max_points: int = 0) -> SeriesWindow:
        """Every series over the last `window_s` seconds, thinned to `max_points` (0: all)."""
        sampler = self._sampler
        if sampler is None:
            return SeriesWindow(window_s, 1)
        return sampler.history.snapshot(window_s, max_points)

    async def samples(self) -> AsyncGenerator[Sample, None]:
        """Each new sample as it is taken (a slow consumer skips to the newest); starts sampling.

        Ends when the monitor closes (at once if it already has).
        """
        await self.start()
        if self._closed:
            return
        queue: asyncio.Queue[Sample | None] = asyncio.Queue(maxsize=1)
        self._consumers.append(queue)
        try:
            while (sample := await queue.get()) is not None:
                yield sample
        finally:
            with contextlib.suppress(ValueError):
                self._consumers.remove(queue)

    # --- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the sample log and start the sampler thread (once); ConfigError on bad settings."""
        if self._sampler is not None or self._closed:
            return
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._sampler is not None:
                return
            interval = self.settings.interval
            if not (math.isfinite(interval) and interval > 0):
                raise ConfigError(
                    f"config error: [monitor] interval must be more than 0 seconds, not "
                    f"{interval:g}; fix it in the config"
                )
            from muxtui.engine.monitor.sample_log import SampleLog
            from muxtui.engine.monitor.sampler import Sampler

            sample_log = None
            if self.settings.log:
                sample_log = SampleLog(
                    Path(self.settings.log).expanduser(), int(self.settings.log_max_mb * 2**20)
                )
                await asyncio.to_thread(sample_log.open)
            loop = asyncio.get_running_loop()
            self._refresh_watched()

            def deliver(sample: Sample) -> None:
                with contextlib.suppress(RuntimeError):  # the loop closed under us
                    loop.call_soon_threadsafe(self._on_sample, sample)

            sampler = Sampler(self.settings, lambda: self._watched, deliver, sample_log=sample_log)
            sampler.start()
            self._sampler = sampler
            self._metrics_task = loop.create_task(
                self._read_metrics(), name="muxtui-monitor-metrics"
            )

    async def aclose(self) -> None:
        """Stop the sampler thread (and wait for it) and end every consumer's iteration."""
        self._closed = True
        task = self._metrics_task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        sampler = self._sampler
        if sampler is not None:
            await asyncio.to_thread(sampler.stop)
        for queue in list(self._consumers):
            _put_newest(queue, None)

    # --- the loop's side -----------------------------------------------------------------------

    def observe(self, event: object) -> None:
        """Engine listener: a server changed state (or the models did): refresh what is watched."""
        if isinstance(event, ServerStateChanged):
            self._active[event.model] = time.time()
            self._stale = True
        elif isinstance(event, ModelsChanged):
            self._stale = True

    def _refresh_watched(self) -> None:
        entries = [entry for entry in self._entries() if entry.local]
        self._watched = Watched(
            servers=tuple(
                ServerRef(entry.name, entry.pid, entry.port, self._active.get(entry.name, 0.0))
                for entry in entries
                if entry.pid is not None
            ),
            model_paths=tuple((entry.name, entry.path) for entry in entries if entry.path),
            metrics=self._watched.metrics,
        )
        self._stale = False

    async def _read_metrics(self) -> None:
        """Refresh what is watched when stale, and ask the servers for their own figures."""
        while True:
            try:
                if self._stale:
                    self._refresh_watched()
                targets = [
                    MetricsTarget(ref.name, ref.pid, ref.port)
                    for ref in self._watched.servers
                    if ref.port is not None
                ]
                latest = self.latest
                if latest is not None:
                    targets += [
                        MetricsTarget(s.name, s.pid, s.port)
                        for s in latest.servers
                        if s.foreign and s.port is not None
                    ]
                await self._metrics.read(targets)
                self._watched = Watched(
                    self._watched.servers, self._watched.model_paths, self._metrics.latest
                )
            except Exception:  # the metrics are extras: never let them stop the monitor
                log.exception("reading the servers' metrics failed")
            await asyncio.sleep(self.settings.interval)

    def _on_sample(self, sample: Sample) -> None:
        if self._closed:
            return
        self.latest = sample
        for queue in self._consumers:
            _put_newest(queue, sample)
        self._emit(SampleTaken(sample))


def _put_newest(queue: asyncio.Queue[Sample | None], item: Sample | None) -> None:
    """Replace whatever the consumer has not taken yet with `item`."""
    with contextlib.suppress(asyncio.QueueEmpty):
        queue.get_nowait()
    queue.put_nowait(item)
