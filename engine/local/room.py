"""Making room for a start: apply the eviction policy to the live servers until it fits.

Evicts the least recently used idle server, or waits (bounded) for busy ones, showing why in
the starting server's STARTING detail and status messages.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from muxtui.engine.errors import LocalServerError
from muxtui.engine.events import ServerState
from muxtui.engine.local.policy import GIB, Limits, make_room
from muxtui.engine.local.server import ServerRecord

if TYPE_CHECKING:
    from muxtui.engine.local.lifecycle import Lifecycle


async def make_room_for(life: Lifecycle, starting: ServerRecord) -> None:
    """Stop least recently used servers until `starting` fits the count and memory limits."""
    cache = life.config.cache
    limits = Limits(cache.max_models, int(cache.memory_budget_gb * GIB))
    deadline = time.monotonic() + life.busy_wait_timeout
    last_note = ""
    while True:
        life.check_abort(starting)
        if limits.memory_budget_bytes and counted_against(starting, life.servers()):
            await life.sample_memory()
        others = {other.name: other for other in counted_against(starting, life.servers())}
        residents = [other.resident() for other in others.values()]
        room = make_room(starting.name, starting.spec.estimate_bytes, residents, limits)
        if room.evict is not None:
            victim = others[room.evict]
            note = f"unloading {victim.name} to make room ({room.limits})"
            life.set_state(starting, ServerState.STARTING, note, force=True)
            starting.announce(note)
            reason = f"evicted for {starting.name} (least recently used; {room.limits})"
            await life.stop(victim, reason)
            continue
        if room.over_limit:
            starting.announce(room.over_limit)
        if not room.wait:
            return
        if time.monotonic() >= deadline:
            raise LocalServerError(
                starting.name,
                f"cannot make room: still {room.wait} after {life.busy_wait_timeout:g} s; "
                "try again when it finishes or raise the limit",
            )
        if room.wait != last_note:
            life.set_state(starting, ServerState.STARTING, room.wait, force=True)
            starting.announce(room.wait)
            last_note = room.wait
        await life.wait_idle_change(min(1.0, deadline - time.monotonic()))


def counted_against(starting: ServerRecord, servers: dict[str, ServerRecord]) -> list[ServerRecord]:
    """The servers that count against the limits for `starting`.

    A start still waiting for room that was asked for after `starting` does not count: earlier
    requests get room first, and two waiting starts never wait on each other.
    """
    return [
        other
        for other in servers.values()
        if other is not starting
        and other.live
        and not (other.process is None and other.requested_seq > starting.requested_seq)
    ]
