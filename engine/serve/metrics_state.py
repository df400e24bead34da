"""The engine's state as metric families, read when `/metrics` is scraped (no loop of its own).

Endpoints (breaker, failures in a row, requests in flight) labelled by provider and host:port,
never by URL (a URL may carry credentials); local servers' state and load time; the Monitor's
latest sample (RAM, swap, CPU, each server's memory, each GPU); the response cache's health.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from prometheus_client.core import GaugeMetricFamily, Metric

from muxtui.engine.events import ServerState

if TYPE_CHECKING:
    from muxtui.engine.events import ModelEntry
    from muxtui.engine.monitor.samples import Sample
    from muxtui.engine.router import Router

log = logging.getLogger("muxtui.serve.metrics")

LOCAL_STATES = tuple(state.value for state in ServerState if state is not ServerState.REMOTE)


class EngineView(Protocol):
    """What the metrics read from the Engine facade."""

    router: Router

    def list_models(self) -> list[ModelEntry]:
        """Every known model with its state."""
        ...

    @property
    def latest_sample(self) -> Sample | None:
        """The Monitor's latest sample, or None before the first."""
        ...


def endpoint_label(base_url: str) -> str:
    """`host:port` of an endpoint's URL: no scheme, user, password, path or query."""
    try:
        parts = urlsplit(base_url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "invalid"
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"{host}:{port}" if host else "invalid"


class EngineStateCollector:
    """Reads the engine at each scrape; one failing part is logged once and left out."""

    def __init__(self, engine: EngineView) -> None:
        self._engine = engine
        self._failed: set[str] = set()

    def describe(self) -> list[Metric]:
        """No fixed names to reserve (see `_RequestCollector.describe`)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The families of every part that could be read."""
        parts: tuple[tuple[str, Callable[[], list[Metric]]], ...] = (
            ("endpoints", self._endpoints),
            ("local servers", self._local_servers),
            ("monitor", self._monitor),
            ("response cache", self._response_cache),
        )
        for name, part in parts:
            try:
                families = part()
            except Exception:
                if name not in self._failed:
                    self._failed.add(name)
                    log.exception("metrics: reading the %s failed; left out of /metrics", name)
                continue
            yield from families

    # --- endpoints ---------------------------------------------------------------------------

    def _endpoints(self) -> list[Metric]:
        router = self._engine.router
        now = time.monotonic()
        # Several URLs of one provider may share a host:port; their figures are combined so
        # each label set appears once.
        merged: dict[tuple[str, str], list[int]] = {}
        for provider_name, provider in router.providers().items():
            for url in provider.urls:
                health = router.health(url)
                key = (provider_name, endpoint_label(url))
                figures = merged.setdefault(key, [0, 0, 0])
                figures[0] = max(figures[0], int(health.cooling(now)))
                figures[1] = max(figures[1], health.failures)
                figures[2] += health.in_flight
        labels = ("provider", "endpoint")
        breaker = GaugeMetricFamily(
            "muxtui_endpoint_breaker_open",
            "1 while the endpoint is on cooldown after failures in a row (passed over), else 0.",
            labels=labels,
        )
        failures = GaugeMetricFamily(
            "muxtui_endpoint_consecutive_failures",
            "Failed attempts in a row at the endpoint (0 after a success).",
            labels=labels,
        )
        in_flight = GaugeMetricFamily(
            "muxtui_endpoint_requests_in_flight",
            "Requests the engine has in flight to the endpoint.",
            labels=labels,
        )
        for key, (cooling, failed, running) in merged.items():
            breaker.add_metric(key, cooling)
            failures.add_metric(key, failed)
            in_flight.add_metric(key, running)
        return [breaker, failures, in_flight]

    # --- local servers -----------------------------------------------------------------------

    def _local_servers(self) -> list[Metric]:
        state = GaugeMetricFamily(
            "muxtui_local_server_state",
            "1 for the local server's current state (" + ", ".join(LOCAL_STATES) + "), else 0.",
            labels=("model", "state"),
        )
        load_time = GaugeMetricFamily(
            "muxtui_local_server_load_time_seconds",
            "How long the local server's last start took, until it answered.",
            labels=("model",),
        )
        in_flight = GaugeMetricFamily(
            "muxtui_local_server_requests_in_flight",
            "Requests the local server is serving for muxtui now.",
            labels=("model",),
        )
        pinned = GaugeMetricFamily(
            "muxtui_local_server_pinned",
            "1 when the local server is pinned (never unloaded), else 0.",
            labels=("model",),
        )
        for entry in self._engine.list_models():
            if not entry.local:
                continue
            current = entry.state.value
            for value in LOCAL_STATES:
                state.add_metric((entry.name, value), 1 if value == current else 0)
            if entry.load_time_s is not None:
                load_time.add_metric((entry.name,), entry.load_time_s)
            in_flight.add_metric((entry.name,), entry.in_flight)
            pinned.add_metric((entry.name,), 1 if entry.pinned else 0)
        return [state, load_time, in_flight, pinned]

    # --- the Monitor's latest sample ---------------------------------------------------------

    def _monitor(self) -> list[Metric]:
        sample = self._engine.latest_sample
        if sample is None:
            return []
        families: list[Metric] = [
            _gauge(
                "muxtui_monitor_sample_timestamp_seconds", "When the sample was taken.", sample.ts
            ),
            _gauge("muxtui_system_memory_total_bytes", "RAM installed.", sample.ram_total),
            _gauge(
                "muxtui_system_memory_available_bytes",
                "RAM available without swapping.",
                sample.ram_available,
            ),
            _gauge("muxtui_system_memory_used_bytes", "RAM in use.", sample.ram_used),
            _gauge("muxtui_system_swap_total_bytes", "Swap space.", sample.swap_total),
            _gauge("muxtui_system_swap_used_bytes", "Swap in use.", sample.swap_used),
            _gauge(
                "muxtui_system_swap_in_bytes_per_second",
                "Bytes swapped in per second since the sample before.",
                sample.swap_in_per_s,
            ),
            _gauge(
                "muxtui_system_cpu_utilization_ratio",
                "CPU use of the whole machine, 0 to 1.",
                sample.cpu_percent / 100.0,
            ),
        ]
        families += self._server_samples(sample)
        families += self._gpu_samples(sample)
        alerts = GaugeMetricFamily(
            "muxtui_monitor_alerts", "Alerts the latest sample raised, by kind.", labels=("kind",)
        )
        kinds: dict[str, int] = {}
        for alert in sample.alerts:
            kinds[alert.kind] = kinds.get(alert.kind, 0) + 1
        for kind, count in kinds.items():
            alerts.add_metric((kind,), count)
        families.append(alerts)
        return families

    def _server_samples(self, sample: Sample) -> list[Metric]:
        labels = ("model",)
        rss = GaugeMetricFamily(
            "muxtui_local_server_resident_memory_bytes",
            "Resident memory of the model server's whole process tree.",
            labels=labels,
        )
        vram = GaugeMetricFamily(
            "muxtui_local_server_vram_bytes",
            "GPU memory held by the model server's processes, all GPUs.",
            labels=labels,
        )
        cpu = GaugeMetricFamily(
            "muxtui_local_server_cpu_cores",
            "CPU in use by the model server's process tree, in cores (1 = one core busy).",
            labels=labels,
        )
        seen: set[str] = set()
        for server in sample.servers:
            if server.name in seen:  # one label set per model
                continue
            seen.add(server.name)
            rss.add_metric((server.name,), server.rss)
            vram.add_metric((server.name,), server.vram)
            cpu.add_metric((server.name,), server.cpu_percent / 100.0)
        return [rss, vram, cpu]

    def _gpu_samples(self, sample: Sample) -> list[Metric]:
        labels = ("gpu", "name")
        util = GaugeMetricFamily(
            "muxtui_gpu_utilization_ratio", "GPU utilisation, 0 to 1.", labels=labels
        )
        used = GaugeMetricFamily("muxtui_gpu_memory_used_bytes", "VRAM in use.", labels=labels)
        total = GaugeMetricFamily("muxtui_gpu_memory_total_bytes", "VRAM installed.", labels=labels)
        temperature = GaugeMetricFamily(
            "muxtui_gpu_temperature_celsius", "GPU temperature.", labels=labels
        )
        power = GaugeMetricFamily("muxtui_gpu_power_watts", "GPU power draw.", labels=labels)
        for gpu in sample.gpus:
            key = (str(gpu.index), gpu.name)
            if gpu.util_percent is not None:
                util.add_metric(key, gpu.util_percent / 100.0)
            used.add_metric(key, gpu.memory_used)
            total.add_metric(key, gpu.memory_total)
            if gpu.temperature_c is not None:
                temperature.add_metric(key, gpu.temperature_c)
            if gpu.power_w is not None:
                power.add_metric(key, gpu.power_w)
        return [util, used, total, temperature, power]

    # --- the response cache ------------------------------------------------------------------

    def _response_cache(self) -> list[Metric]:
        # Opening the cache is lazy and never fails (engine/cache/store.py); serve opens it at
        # its first cacheable request anyway, and the Engine closes it.
        cache = getattr(self._engine, "response_cache", None)
        backend = getattr(cache, "backend", None)
        if cache is None or not isinstance(backend, str) or backend == "off":
            return []
        healthy = GaugeMetricFamily(
            "muxtui_response_cache_healthy",
            "1 while the response cache backend answers (Redis down: 0, requests skip it).",
            labels=("backend",),
        )
        healthy.add_metric((backend,), 1 if getattr(cache, "healthy", False) else 0)
        return [healthy]


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
