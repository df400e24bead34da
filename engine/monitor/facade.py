"""The Engine's Monitor methods (a mixin of the facade, kept beside the Monitor)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from muxtui.engine.monitor.monitor import Monitor
    from muxtui.engine.monitor.samples import Alert, Sample
    from muxtui.engine.monitor.series import SeriesWindow


class MonitorMixin:
    """Samples of memory, CPU, model servers and GPUs, their history and alerts."""

    _monitor: Monitor

    def samples(self) -> AsyncGenerator[Sample, None]:
        """Each Monitor sample as it is taken; the sampler starts on first use (ConfigError)."""
        return self._monitor.samples()

    def monitor_series(self, window_s: float, max_points: int = 0) -> SeriesWindow:
        """Monitor series over the last `window_s` s, oldest first, at most `max_points` each."""
        return self._monitor.series(window_s, max_points)

    @property
    def alerts(self) -> tuple[Alert, ...]:
        """The alerts the latest Monitor sample raised."""
        return self._monitor.alerts

    @property
    def latest_sample(self) -> Sample | None:
        """The latest Monitor sample, or None before the first."""
        return self._monitor.latest
