"""Alert rules: pure functions over recorded series, each naming the subject, figure and fix.

The rules take plain sequences (times in seconds, values) and thresholds and return an `Alert`
or None, so tests feed them recorded series. `AlertBook` holds what the rules need to remember
between samples (muxtui's baseline, servers that stopped, when each alert was first raised).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from muxtui.engine.monitor.samples import Alert, GpuSample

MIB = 2**20
GIB = 2**30
SWAP_WINDOW_S = 10.0  # swap-in and GPU power are judged on a 10 s mean, not one spike
LEAK_MIN_R2 = 0.9  # "climbing steadily": the straight line explains most of the change
LEAK_COVERAGE = 0.8  # the idle stretch must cover this share of the window
VRAM_MIN_HELD = 256 * MIB  # smaller amounts are noise in the GPU's used figure
VRAM_WATCH_S = 600.0  # how long after a stop a missing return is still reported
DEFAULT_SLOWDOWN_C = 90.0  # when the driver does not say where the GPU slows down


def size(count: float) -> str:
    """A byte count in MiB or GiB."""
    if abs(count) >= GIB:
        return f"{count / GIB:.1f} GiB"
    return f"{count / MIB:.0f} MiB"


def least_squares(times: Sequence[float], values: Sequence[float]) -> tuple[float, float]:
    """(slope per second, r²) of the straight line fitted to the points; (0, 0) if undefined."""
    count = len(times)
    if count < 3 or count != len(values):
        return 0.0, 0.0
    t0 = times[0]
    mean_t = sum(t - t0 for t in times) / count
    mean_v = sum(values) / count
    s_tt = s_tv = s_vv = 0.0
    for t, v in zip(times, values, strict=True):
        dt, dv = t - t0 - mean_t, v - mean_v
        s_tt += dt * dt
        s_tv += dt * dv
        s_vv += dv * dv
    if s_tt <= 0:
        return 0.0, 0.0
    slope = s_tv / s_tt
    r2 = (s_tv * s_tv) / (s_tt * s_vv) if s_vv > 0 else 0.0
    return slope, r2


def memory_pressure(total: int, available: int, min_pct: float) -> Alert | None:
    """RAM available below `min_pct` percent of the total."""
    if total <= 0 or available * 100 >= min_pct * total:
        return None
    pct = 100 * available / total
    return Alert(
        "memory-pressure",
        "RAM",
        f"only {size(available)} of {size(total)} available ({pct:.0f}%); unload a model "
        "(Models pane: u) or close programs before the system starts swapping",
    )


def swapping(
    times: Sequence[float], rates: Sequence[float], max_bytes_s: float, window_s: float
) -> Alert | None:
    """The swap-in rate, averaged over the last `window_s` seconds, above `max_bytes_s`."""
    if not times:
        return None
    since = times[-1] - window_s
    recent = [rate for t, rate in zip(times, rates, strict=True) if t > since]
    mean = sum(recent) / len(recent)
    if mean <= max_bytes_s:
        return None
    return Alert(
        "swapping",
        "swap",
        f"swapping in {mean / 1e6:.1f} MB/s ({window_s:.0f} s mean): everything slows down; "
        "unload a model, or use a smaller quantisation or context",
    )


def server_leak(
    name: str,
    times: Sequence[float],
    rss: Sequence[float],
    idle_since: float,
    window_s: float,
    min_growth: float,
) -> Alert | None:
    """An idle server whose memory climbs steadily: the fitted slope over the window, not a jump.

    Only points after `idle_since` (the last request or state change) count, and they must
    cover most of the window; the line fitted by least squares must explain the change
    (r² ≥ 0.9) and add at least `min_growth` bytes over the window.
    """
    if not times:
        return None
    start = max(times[-1] - window_s, idle_since)
    points = [(t, v) for t, v in zip(times, rss, strict=True) if t >= start]
    if len(points) < 3 or points[-1][0] - points[0][0] < LEAK_COVERAGE * window_s:
        return None
    slope, r2 = least_squares([t for t, _ in points], [v for _, v in points])
    if r2 < LEAK_MIN_R2 or slope * window_s < min_growth:
        return None
    span = points[-1][0] - points[0][0]
    grown = points[-1][1] - points[0][1]
    return Alert(
        "server-leak",
        name,
        f"{name}'s memory grew {size(grown)} in {_duration(span)} while idle "
        f"({size(slope * 60)}/min, steady); restart it (Models pane: u, then p) and report "
        "the server's version if it keeps happening",
    )


def self_growth(rss: int, baseline: int, max_growth: float) -> Alert | None:
    """muxtui's own RSS more than `max_growth` bytes above its baseline."""
    if baseline <= 0 or rss - baseline <= max_growth:
        return None
    return Alert(
        "muxtui-growth",
        "muxtui",
        f"muxtui's own memory grew {size(rss - baseline)} since it started "
        f"({size(baseline)} to {size(rss)}); restart muxtui and report it",
    )


@dataclass(frozen=True)
class StoppedServer:
    """A server that held VRAM when it stopped: what the GPU should give back."""

    name: str
    gpu_index: int
    stopped_at: float
    used_before: int  # the GPU's used VRAM in the last sample with the server alive
    held: int  # the VRAM the server's processes held then


def vram_not_returned(
    stop: StoppedServer, times: Sequence[float], used: Sequence[float], delay_s: float
) -> Alert | None:
    """A stopped server's VRAM still in use `delay_s` seconds after it stopped.

    At least half of what it held must have come back by then (other programs may take
    some meanwhile); the newest point after the delay decides.
    """
    if stop.held < VRAM_MIN_HELD or not times or times[-1] < stop.stopped_at + delay_s:
        return None
    returned = stop.used_before - used[-1]
    if returned >= stop.held / 2:
        return None
    waited = times[-1] - stop.stopped_at
    return Alert(
        "vram-not-returned",
        f"GPU {stop.gpu_index}",
        f"{stop.name} stopped {waited:.0f} s ago but only {size(max(returned, 0))} of its "
        f"{size(stop.held)} VRAM came back; a process of it may still run: check nvidia-smi",
    )


def gpu_temperature(gpu: GpuSample, temperatures: Sequence[float], margin: float) -> Alert | None:
    """A GPU within `margin` degrees of its slowdown temperature (mean of the recent points)."""
    if not temperatures:
        return None
    limit = gpu.slowdown_temperature_c or DEFAULT_SLOWDOWN_C
    mean = sum(temperatures) / len(temperatures)
    if mean < limit - margin:
        return None
    return Alert(
        "gpu-temperature",
        f"GPU {gpu.index}",
        f"{gpu.name} at {mean:.0f} °C, {max(limit - mean, 0):.0f} °C from its slowdown "
        f"point ({limit:.0f} °C); it will throttle: check cooling or lower the load",
    )


def gpu_power(gpu: GpuSample, powers: Sequence[float], max_pct: float) -> Alert | None:
    """A GPU drawing `max_pct` percent or more of its power limit (mean of the recent points)."""
    limit = gpu.power_limit_w
    if not powers or not limit:
        return None
    mean = sum(powers) / len(powers)
    if mean * 100 < max_pct * limit:
        return None
    return Alert(
        "gpu-power",
        f"GPU {gpu.index}",
        f"{gpu.name} draws {mean:.0f} W of its {limit:.0f} W limit "
        f"({100 * mean / limit:.0f}%, {SWAP_WINDOW_S:.0f} s mean); it will throttle: lower "
        "the load or the power target",
    )


class AlertBook:
    """What alerts remember between samples; used by the sampler thread only."""

    def __init__(self, baseline_after_s: float) -> None:
        self.baseline_after_s = baseline_after_s
        self.started_at: float | None = None
        self.baseline = 0  # muxtui's RSS once it settled
        self.stopped: list[StoppedServer] = []
        self._since: dict[tuple[str, str], float] = {}

    def note_rss(self, ts: float, rss: int) -> None:
        """Take muxtui's baseline RSS once it has run `baseline_after_s` seconds."""
        if self.started_at is None:
            self.started_at = ts
        if not self.baseline and ts - self.started_at >= self.baseline_after_s:
            self.baseline = rss

    def note_stopped(self, stops: Sequence[StoppedServer], now: float) -> None:
        """Remember servers that stopped holding VRAM; forget ones watched long enough."""
        self.stopped = [s for s in self.stopped if now - s.stopped_at < VRAM_WATCH_S]
        self.stopped.extend(stop for stop in stops if stop.held >= VRAM_MIN_HELD)

    def stamp(self, raised: Sequence[Alert], now: float) -> tuple[Alert, ...]:
        """The raised alerts with the time each was first raised (kept while it stays raised)."""
        since = {}
        stamped = []
        for alert in raised:
            key = (alert.kind, alert.subject)
            since[key] = self._since.get(key, now)
            stamped.append(replace(alert, since=since[key]))
        self._since = since
        return tuple(stamped)


def _duration(seconds: float) -> str:
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    if seconds >= 10 or math.isclose(seconds, round(seconds)):
        return f"{seconds:.0f} s"
    return f"{seconds:.1f} s"
