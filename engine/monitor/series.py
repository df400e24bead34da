"""Ring buffers of sampled figures: bounded, preallocated, read as immutable windows.

Each series keeps (time, value) pairs in two preallocated `array('d')` rings, so an hour of
samples costs a fixed 16 bytes a point whatever runs for how long, and reading a window copies
out plain tuples the sampler thread can never change under a reader.
"""

from __future__ import annotations

import math
import threading
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field

from muxtui.engine.monitor.samples import Sample

HISTORY_S = 3600.0  # at least an hour at the configured interval
MAX_POINTS = 36_000  # an hour at 0.1 s; faster intervals keep less than an hour

# Figures kept per part; the pane graphs these and the alert rules fit them.
SYSTEM_FIELDS = ("ram_used", "ram_available", "swap_used", "swap_in", "cpu", "process_rss")
SERVER_FIELDS = ("rss", "rss_anon", "cpu", "vram", "tokens_per_s", "kv_used")
GPU_FIELDS = ("util", "memory_used", "temperature", "power")


Points = tuple[tuple[float, ...], tuple[float, ...]]  # (times, values), oldest first


def capacity_for(interval: float) -> int:
    """How many points hold an hour of samples at `interval` seconds (bounded)."""
    return max(60, min(MAX_POINTS, math.ceil(HISTORY_S / max(interval, 1e-3))))


class Ring:
    """A fixed-capacity ring of (time, value) pairs."""

    __slots__ = ("_count", "_next", "_times", "_values", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._times = array("d", bytes(8 * capacity))
        self._values = array("d", bytes(8 * capacity))
        self._next = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def append(self, ts: float, value: float) -> None:
        """Add a point, overwriting the oldest once full."""
        index = self._next
        self._times[index] = ts
        self._values[index] = value
        self._next = (index + 1) % self.capacity
        self._count = min(self._count + 1, self.capacity)

    def last(self) -> float | None:
        """The newest value, or None when empty."""
        if not self._count:
            return None
        return self._values[self._next - 1]

    def window(self, since: float) -> Points:
        """(times, values) of the points at or after `since`, oldest first."""
        start = self._first_at(since)
        return tuple(self._slice(self._times, start)), tuple(self._slice(self._values, start))

    def peaks(self, since: float, step: int) -> tuple[float, ...]:
        """The values at or after `since`, the highest of each `step` in a row, oldest first.

        Groups are counted back from the newest point, so the newest is always in the last.
        Each group is read in place: no copy of the whole window is made.
        """
        first = self._first_at(since)
        if step <= 1:
            return tuple(self._slice(self._values, first))
        values, capacity = self._values, self.capacity
        peaks = []
        for end in range(first + ((self._count - first) % step or step), self._count + 1, step):
            start = self._physical(max(end - step, first))
            length = end - max(end - step, first)
            if start + length <= capacity:
                peaks.append(max(values[start : start + length]))
            else:
                peaks.append(max(max(values[start:]), max(values[: start + length - capacity])))
        return tuple(peaks)

    def _physical(self, logical: int) -> int:
        """Where the `logical`-th oldest point sits in the arrays."""
        return (self._next - self._count + logical) % self.capacity

    def _first_at(self, since: float) -> int:
        """The logical index of the first point at or after `since` (a binary search)."""
        low, high = 0, self._count
        times = self._times
        while low < high:
            middle = (low + high) // 2
            if times[self._physical(middle)] < since:
                low = middle + 1
            else:
                high = middle
        return low

    def _slice(self, data: array[float], start: int) -> array[float]:
        """The logical points from `start` to the newest, copied out oldest first."""
        first, count = self._physical(start), self._count - start
        if count <= 0:
            return array("d")
        if first + count <= self.capacity:
            return data[first : first + count]
        return data[first:] + data[: first + count - self.capacity]


@dataclass(frozen=True)
class SeriesWindow:
    """The values of every series over the last `window_s` seconds, oldest first.

    `points` is how many points fill the window at the sampling interval, so a graph can
    leave the part of the window from before the first sample blank.
    """

    window_s: float
    points: int  # slots the window spans, each `step` samples wide
    system: dict[str, tuple[float, ...]] = field(default_factory=dict)
    servers: dict[str, dict[str, tuple[float, ...]]] = field(default_factory=dict)
    gpus: dict[int, dict[str, tuple[float, ...]]] = field(default_factory=dict)
    step: int = 1  # samples per point: the highest of each run of `step` is kept


class History:
    """Every series the Monitor keeps; written by the sampler thread, read from anywhere."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.capacity = capacity_for(interval)
        self._lock = threading.Lock()
        self._system = {name: Ring(self.capacity) for name in SYSTEM_FIELDS}
        self._servers: dict[str, tuple[int, dict[str, Ring]]] = {}  # name -> (pid, rings)
        self._gpus: dict[int, dict[str, Ring]] = {}
        self._latest_ts = 0.0

    def record(self, sample: Sample) -> None:
        """Append one sample's figures; a server that is gone (or restarted) starts afresh."""
        ts = sample.ts
        with self._lock:
            self._latest_ts = ts
            for name, value in _system_values(sample):
                self._system[name].append(ts, value)
            live: dict[str, tuple[int, dict[str, Ring]]] = {}
            for server in sample.servers:
                kept = self._servers.get(server.name)
                if kept is None or kept[0] != server.pid:
                    kept = (server.pid, {name: Ring(self.capacity) for name in SERVER_FIELDS})
                live[server.name] = kept
                rings = kept[1]
                rings["rss"].append(ts, server.rss)
                rings["rss_anon"].append(
                    ts, server.rss if server.rss_anon is None else server.rss_anon
                )
                rings["cpu"].append(ts, server.cpu_percent)
                rings["vram"].append(ts, server.vram)
                if server.tokens_per_s is not None:
                    rings["tokens_per_s"].append(ts, server.tokens_per_s)
                if server.kv_used is not None:
                    rings["kv_used"].append(ts, server.kv_used)
            self._servers = live
            for gpu in sample.gpus:
                rings = self._gpus.setdefault(
                    gpu.index, {name: Ring(self.capacity) for name in GPU_FIELDS}
                )
                figures: tuple[tuple[str, float | None], ...] = (
                    ("util", gpu.util_percent),
                    ("memory_used", gpu.memory_used),
                    ("temperature", gpu.temperature_c),
                    ("power", gpu.power_w),
                )
                for field_name, figure in figures:
                    if figure is not None:
                        rings[field_name].append(ts, figure)

    def system(self, name: str, window_s: float) -> Points:
        """(times, values) of one system series over the last `window_s` seconds."""
        return self._window(self._system, name, window_s)

    def server(self, model: str, name: str, window_s: float) -> Points:
        """(times, values) of one server series; empty when the server is not running."""
        kept = self._servers.get(model)
        return self._window(kept[1] if kept is not None else None, name, window_s)

    def gpu(self, index: int, name: str, window_s: float) -> Points:
        """(times, values) of one GPU series; empty for an unknown GPU."""
        return self._window(self._gpus.get(index), name, window_s)

    def _window(self, rings: dict[str, Ring] | None, name: str, window_s: float) -> Points:
        with self._lock:
            if rings is None:
                return (), ()
            return rings[name].window(self._latest_ts - window_s)

    def snapshot(self, window_s: float, max_points: int = 0) -> SeriesWindow:
        """Every series over the last `window_s` seconds, at most `max_points` each (0: all).

        Longer windows are thinned by keeping the highest of each run of points, so peaks
        survive and a reader never holds more floats than it can draw.
        """
        with self._lock:
            since = self._latest_ts - window_s
            slots = max(1, min(self.capacity, round(window_s / self.interval)))
            step = -(-slots // max_points) if max_points > 0 else 1
            return SeriesWindow(
                window_s,
                -(-slots // step),
                {name: ring.peaks(since, step) for name, ring in self._system.items()},
                {
                    model: {name: ring.peaks(since, step) for name, ring in rings.items()}
                    for model, (_pid, rings) in self._servers.items()
                },
                {
                    index: {name: ring.peaks(since, step) for name, ring in rings.items()}
                    for index, rings in self._gpus.items()
                },
                step,
            )


def _system_values(sample: Sample) -> Iterator[tuple[str, float]]:
    yield "ram_used", sample.ram_used
    yield "ram_available", sample.ram_available
    yield "swap_used", sample.swap_used
    yield "swap_in", sample.swap_in_per_s
    yield "cpu", sample.cpu_percent
    yield "process_rss", sample.process_rss
