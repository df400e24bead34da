"""What a model server says about itself: llama-server's `/metrics` (with `--metrics`), `/slots`.

Read on the event loop with a short timeout, never in the sampler thread; a path a server
does not offer (404, 501) is asked again only after it restarts. Tokens per second come from
the `tokens_predicted_total` counter's change between reads where `/metrics` is on, else from
the tokens each busy slot of `/slots` generated since the last read (llama-server offers
`/slots` by default); KV use from `kv_cache_usage_ratio` where the build reports it, else from
the context the busy slots fill.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from muxtui.engine.http_probe import http_get
from muxtui.engine.local.models import LOOPBACK

READ_TIMEOUT_S = 0.5
_NOT_OFFERED = (404, 405, 501)  # what llama-server (501) and others answer for a missing path


@dataclass(frozen=True)
class ServerMetrics:
    """One server's own figures; None where it does not report them."""

    requests_processing: int | None = None
    tokens_per_s: float | None = None
    kv_used: float | None = None


@dataclass(frozen=True)
class MetricsTarget:
    """A server to ask: its model name, root pid and loopback port."""

    name: str
    pid: int
    port: int


def parse_prometheus(text: str) -> dict[str, float]:
    """Metric name (labels dropped, first series wins) to value, from Prometheus text."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, rest = line.partition(" ")
        name = name_part.split("{", 1)[0]
        fields = rest.split()
        if not fields or name in values:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        if math.isfinite(value):
            values[name] = value
    return values


@dataclass(frozen=True)
class SlotsFigures:
    """What `/slots` says: busy slots, the context they fill, tokens each busy one generated."""

    busy: int
    kv_used: float
    decoded: dict[tuple[int, int], int]  # (slot id, task id) -> tokens generated so far


def slots_figures(slots: Any) -> SlotsFigures | None:
    """The figures in `/slots`' JSON, or None when it is not a list of slots."""
    if not isinstance(slots, list) or not slots:
        return None
    busy = 0
    filled = 0.0
    context = 0.0
    decoded: dict[tuple[int, int], int] = {}
    for slot in slots:
        if not isinstance(slot, dict):
            return None
        context += float(slot.get("n_ctx") or 0)
        if not slot.get("is_processing"):
            continue
        busy += 1
        filled += float(slot.get("n_prompt_tokens") or 0)
        next_tokens = slot.get("next_token")
        if isinstance(next_tokens, list) and next_tokens and isinstance(next_tokens[0], dict):
            generated = int(next_tokens[0].get("n_decoded") or 0)
            filled += generated
            decoded[(int(slot.get("id") or 0), int(slot.get("id_task") or 0))] = generated
    return SlotsFigures(busy, min(filled / context, 1.0) if context > 0 else 0.0, decoded)


class ServerMetricsReader:
    """Asks each server for its figures; `latest` maps a model name to what it said last."""

    def __init__(self) -> None:
        self.latest: Mapping[str, ServerMetrics] = {}
        self._unsupported: dict[tuple[int, int], set[str]] = {}  # (pid, port) -> paths
        self._counters: dict[tuple[int, int], tuple[float, float]] = {}  # -> (tokens, time)
        self._slots: dict[tuple[int, int], tuple[dict[tuple[int, int], int], float]] = {}

    async def read(self, targets: Iterable[MetricsTarget]) -> None:
        """Read every target concurrently and replace `latest` with the figures found."""
        chosen = list(targets)
        live = {(t.pid, t.port) for t in chosen}
        self._unsupported = {k: v for k, v in self._unsupported.items() if k in live}
        self._counters = {k: v for k, v in self._counters.items() if k in live}
        self._slots = {k: v for k, v in self._slots.items() if k in live}
        results = await asyncio.gather(*(self._read_one(t) for t in chosen))
        self.latest = {
            target.name: metrics
            for target, metrics in zip(chosen, results, strict=True)
            if metrics is not None
        }

    async def _read_one(self, target: MetricsTarget) -> ServerMetrics | None:
        key = (target.pid, target.port)
        skip = self._unsupported.setdefault(key, set())
        processing: int | None = None
        tokens_per_s: float | None = None
        kv_used: float | None = None
        if "/metrics" not in skip:
            prom = await self._get(target.port, "/metrics", skip)
            if prom is not None:
                values = parse_prometheus(prom.decode("utf-8", "replace"))
                if "llamacpp:requests_processing" in values:
                    processing = int(values["llamacpp:requests_processing"])
                tokens_per_s = self._rate(key, values.get("llamacpp:tokens_predicted_total"))
                kv_used = values.get("llamacpp:kv_cache_usage_ratio")
        if "/slots" not in skip and (kv_used is None or tokens_per_s is None):
            body = await self._get(target.port, "/slots", skip)
            figures = None
            if body is not None:
                try:
                    figures = slots_figures(json.loads(body))
                except ValueError:
                    skip.add("/slots")
            if figures is not None:
                processing = figures.busy if processing is None else processing
                kv_used = figures.kv_used if kv_used is None else kv_used
                if tokens_per_s is None:
                    tokens_per_s = self._slots_rate(key, figures.decoded)
        if processing is None and tokens_per_s is None and kv_used is None:
            return None
        return ServerMetrics(processing, tokens_per_s, kv_used)

    async def _get(self, port: int, path: str, skip: set[str]) -> bytes | None:
        try:
            status, body = await http_get(LOOPBACK, port, path, timeout=READ_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError):
            return None  # busy or restarting: ask again next time
        if status in _NOT_OFFERED:
            skip.add(path)  # not enabled on this server (llama-server without --metrics)
        return body if status == 200 else None  # 503 while loading: ask again later
        return body

    def _slots_rate(self, key: tuple[int, int], decoded: dict[tuple[int, int], int]) -> float:
        """Tokens per second the busy slots generated since the last read (0 when idle)."""
        now = time.monotonic()
        previous, then = self._slots.get(key, ({}, now))
        self._slots[key] = (decoded, now)
        if now <= then:
            return 0.0
        made = sum(max(count - previous.get(slot, 0), 0) for slot, count in decoded.items())
        return made / (now - then)

    def _rate(self, key: tuple[int, int], total: float | None) -> float | None:
        if total is None:
            return None
        now = time.monotonic()
        previous = self._counters.get(key)
        self._counters[key] = (total, now)
        if previous is None or now <= previous[1] or total < previous[0]:
            return None
        return (total - previous[0]) / (now - previous[1])
