"""Making room for a server that is starting: which warm server to stop, or why to wait.

A pure function over plain data, so every rule is tested without a process: the count limit
(`max_models`), the memory budget, pins (never stopped automatically, and they win over the
limits), servers busy with requests or with starting or stopping (never stopped, waited for),
and least-recently-used order among the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

from muxtui.engine.events import ServerState

GIB = 2**30


@dataclass(frozen=True)
class Resident:
    """A server that holds, or is about to hold, a process: what the policy weighs."""

    name: str
    memory_bytes: int  # measured RSS + VRAM, or the estimate before a measurement
    last_used: float  # monotonic seconds; the smallest is the least recently used
    pinned: bool = False
    in_flight: int = 0  # requests being answered now
    waiting: int = 0  # requests waiting for it to become ready
    state: ServerState = ServerState.WARM


@dataclass(frozen=True)
class Limits:
    """The `[cache]` limits; 0 means no limit."""

    max_models: int = 0
    memory_budget_bytes: int = 0


@dataclass(frozen=True)
class Room:
    """The decision: start now, stop `evict` first, or wait (`wait` says for whom and why).

    `over_limit` is set when only pinned servers stand in the way: the start goes ahead.
    """

    evict: str | None = None
    wait: str = ""
    over_limit: str = ""
    limits: str = ""  # which limits the start would break, e.g. "max_models = 2"

    @property
    def start_now(self) -> bool:
        """Whether the start may go ahead without stopping or waiting for anything."""
        return self.evict is None and not self.wait


def exceeded(need_bytes: int, others: list[Resident], limits: Limits) -> str:
    """Which limits starting one more server of `need_bytes` would break; '' when none."""
    reasons = []
    if limits.max_models > 0 and len(others) + 1 > limits.max_models:
        reasons.append(f"max_models = {limits.max_models}")
    if limits.memory_budget_bytes > 0 and others:
        used = sum(other.memory_bytes for other in others)
        if used + need_bytes > limits.memory_budget_bytes:
            reasons.append(
                f"memory_budget_gb = {limits.memory_budget_bytes / GIB:g}: "
                f"{used / GIB:.1f} GiB in use + {need_bytes / GIB:.1f} GiB needed"
            )
    return ", ".join(reasons)


def evictable(resident: Resident) -> bool:
    """Whether `resident` may be stopped now: not pinned, warm, idle, nobody waiting for it."""
    return (
        not resident.pinned
        and resident.state is ServerState.WARM
        and resident.in_flight == 0
        and resident.waiting == 0
    )


def make_room(starting: str, need_bytes: int, others: list[Resident], limits: Limits) -> Room:
    """Decide what a start of `starting` (needing `need_bytes`) must do about the `others`."""
    why = exceeded(need_bytes, others, limits)
    if not why:
        return Room()
    victims = [other for other in others if evictable(other)]
    if victims:
        victim = min(victims, key=lambda other: (other.last_used, other.name))
        return Room(evict=victim.name, limits=why)
    blockers = [other for other in others if not other.pinned]
    if not blockers:
        # Pins are the person's explicit wish; they win over the limits.
        pinned = ", ".join(other.name for other in others) or "nothing else"
        return Room(
            over_limit=f"starting {starting} over the limit ({why}; {pinned} pinned)", limits=why
        )
    return Room(wait=_wait_reason(blockers, why), limits=why)


def _wait_reason(blockers: list[Resident], why: str) -> str:
    if len(blockers) > 1:
        described = ", ".join(f"{b.name} ({_activity(b)})" for b in blockers)
        return f"waiting for {described} to finish before stopping one ({why})"
    (only,) = blockers
    if only.state is ServerState.STOPPING:
        return f"waiting for {only.name} to stop ({why})"
    if only.in_flight == 1:
        until = "to finish a reply"
    elif only.in_flight > 1:
        until = "to finish its replies"
    elif only.state is ServerState.STARTING:
        until = "to finish starting"
    elif only.waiting:
        until = "to answer the requests waiting for it"
    else:
        until = "to settle"
    return f"waiting for {only.name} ({_activity(only)}) {until} before stopping it ({why})"


def _activity(resident: Resident) -> str:
    if resident.in_flight:
        return f"{resident.in_flight} in flight"
    if resident.waiting and resident.state is ServerState.WARM:
        return f"{resident.waiting} waiting"
    return str(resident.state)
