"""One model's share of a batch pass: its route, how many requests at once, its work queue."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from muxtui.engine.batch.forward import Forwarder, Route
from muxtui.engine.errors import MuxtuiError

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from muxtui.engine.backends.base import Endpoint
    from muxtui.engine.local.manager import LocalEndpoint
    from muxtui.engine.router import Target

_FD_HEADROOM = 64  # descriptors left for files, logs and the event loop


@dataclass(slots=True)
class Work:
    """One item ready to send: the body as sent and its ledger key."""

    custom_id: str
    line: int
    body: bytes
    key: int
    seq: int  # its place in input order (for --ordered)
    cache_key: str | None = None  # the response cache's key, when the body asks for it


class Lane:
    """A model's route, its bounded queue, its workers' count, and its local-server lease."""

    def __init__(self, route: Route) -> None:
        self.route = route
        self.concurrency = 1
        self.queue: asyncio.Queue[Work | None] = asyncio.Queue(maxsize=2)
        self.failure: MuxtuiError | None = None  # a local server that could not start
        self.lease: AbstractAsyncContextManager[LocalEndpoint] | None = None
        self.cache_identity = ""  # the model's identity for cache keys ("": no cache)

    async def close(self) -> None:
        """Let go of the local server held for the pass."""
        lease, self.lease = self.lease, None
        if lease is not None:
            await lease.__aexit__(None, None, None)


async def open_lane(
    forwarder: Forwarder,
    target: Target,
    asked: int | None,
    default_per_endpoint: int,
    notes: list[str],
    status: Callable[[str], None],
) -> Lane:
    """A lane for `target`: a local server started and held for the pass, and sized."""
    lane = Lane(forwarder.route(target))
    endpoints: list[Endpoint] = list(target.endpoints)
    if target.local:
        status(f"starting the local server for {target.name}")
        lease = forwarder.servers.acquire(target.name, on_status=status)
        try:
            local = await lease.__aenter__()
        except MuxtuiError as exc:  # every item of this model gets this error, none is sent
            lane.failure = exc
            return lane
        lane.lease = lease
        lane.route.model_id = local.model_id or target.model_id
        endpoints = [lane.route.local_endpoint(local)]
    await _size(lane, forwarder, endpoints, asked, default_per_endpoint, notes)
    return lane


async def _size(
    lane: Lane,
    forwarder: Forwarder,
    endpoints: list[Endpoint],
    asked: int | None,
    default_per_endpoint: int,
    notes: list[str],
) -> None:
    """Requests at once (asked for, else the servers' slots, else the config) and connections.

    Each endpoint's connection limit is raised to the concurrency, so a batch of 16 opens 16
    connections; a provider's own `max_connections` is a deliberate limit and is kept, said.
    """
    route, target = lane.route, lane.route.target
    cap = target.max_connections
    concurrency = asked
    if concurrency is None:
        fallback = cap or default_per_endpoint
        found = await asyncio.gather(*(forwarder.probe_slots(route, e) for e in endpoints))
        for endpoint, slots in zip(endpoints, found, strict=True):
            route.weights[endpoint.base_url] = float(slots or fallback)
        concurrency = sum(slots or fallback for slots in found)
        how = "the slots its server reports" if any(found) else "[network] max_connections"
        notes.append(f"{target.name}: {concurrency} at once, from {how} (--concurrency sets it)")
    elif cap and concurrency > cap * len(endpoints):
        notes.append(
            f"{target.name}: {cap * len(endpoints)} at once, not {concurrency}: "
            f"[providers.{target.provider}] max_connections = {cap} per endpoint"
        )
        concurrency = cap * len(endpoints)
    limit = open_files_limit()
    if limit and concurrency > limit:
        notes.append(
            f"{target.name}: {limit} at once, not {concurrency}: the open-files limit (ulimit -n)"
        )
        concurrency = limit
    lane.concurrency = max(1, concurrency)
    lane.queue = asyncio.Queue(maxsize=2 * lane.concurrency)
    route.connections = min(lane.concurrency, cap) if cap else lane.concurrency


def open_files_limit() -> int:
    """Connections this process may open, leaving room for files; 0 if it cannot tell."""
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY:
            return max(1, soft - _FD_HEADROOM)
    return 0
