"""The eviction policy as a table: plain data in, one decision out, no processes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from muxtui.engine.events import ServerState
from muxtui.engine.local.policy import GIB, Limits, Resident, Room, evictable, make_room

S = ServerState


def warm(name: str, last_used: float, gib: float = 1.0, **extra: Any) -> Resident:
    return Resident(name, int(gib * GIB), last_used, **extra)


@dataclass(frozen=True)
class Row:
    """One case: the servers running, the limits, what the start needs; the expected room."""

    what: str
    others: list[Resident]
    limits: Limits
    expected: Room
    need_gib: float = 1.0


COUNT_2 = Limits(max_models=2)
BUDGET_4 = Limits(memory_budget_bytes=4 * GIB)

ROWS = [
    Row("nothing running", [], COUNT_2, Room()),
    Row("under the count", [warm("a", 1)], COUNT_2, Room()),
    Row("no limits at all", [warm(n, i) for i, n in enumerate("abcdef")], Limits(), Room()),
    Row(
        "count reached: the least recently used goes",
        [warm("a", 5), warm("b", 2)],
        COUNT_2,
        Room(evict="b", limits="max_models = 2"),
    ),
    Row(
        "LRU order, whatever the list order",
        [warm("new", 9), warm("old", 1), warm("mid", 5)],
        Limits(max_models=3),
        Room(evict="old", limits="max_models = 3"),
    ),
    Row(
        "equal use times: the name decides, so the choice is stable",
        [warm("b", 1), warm("a", 1)],
        Limits(max_models=1),
        Room(evict="a", limits="max_models = 1"),
    ),
    Row(
        "pinned is never chosen, even when least recently used",
        [warm("p", 1, pinned=True), warm("b", 5)],
        COUNT_2,
        Room(evict="b", limits="max_models = 2"),
    ),
    Row(
        "busy is never chosen: an idle newer one goes",
        [warm("busy", 1, in_flight=2, state=S.BUSY), warm("idle", 5)],
        COUNT_2,
        Room(evict="idle", limits="max_models = 2"),
    ),
    Row(
        "a server someone waits for is never chosen",
        [warm("awaited", 1, waiting=1), warm("idle", 5)],
        COUNT_2,
        Room(evict="idle", limits="max_models = 2"),
    ),
    Row(
        "only a busy one in the way: wait for its reply",
        [warm("qwen", 1, in_flight=1, state=S.BUSY)],
        Limits(max_models=1),
        Room(
            wait="waiting for qwen (1 in flight) to finish a reply before stopping it "
            "(max_models = 1)",
            limits="max_models = 1",
        ),
    ),
    Row(
        "several replies in flight",
        [warm("qwen", 1, in_flight=3, state=S.BUSY)],
        Limits(max_models=1),
        Room(
            wait="waiting for qwen (3 in flight) to finish its replies before stopping it "
            "(max_models = 1)",
            limits="max_models = 1",
        ),
    ),
    Row(
        "one still starting",
        [warm("s", 1, state=S.STARTING)],
        Limits(max_models=1),
        Room(
            wait="waiting for s (starting) to finish starting before stopping it (max_models = 1)",
            limits="max_models = 1",
        ),
    ),
    Row(
        "one already stopping",
        [warm("s", 1, state=S.STOPPING)],
        Limits(max_models=1),
        Room(wait="waiting for s to stop (max_models = 1)", limits="max_models = 1"),
    ),
    Row(
        "several busy ones: all named",
        [warm("a", 1, in_flight=1, state=S.BUSY), warm("b", 2, state=S.STARTING)],
        Limits(max_models=2),
        Room(
            wait="waiting for a (1 in flight), b (starting) to finish before stopping one "
            "(max_models = 2)",
            limits="max_models = 2",
        ),
    ),
    Row(
        "busy and pinned: wait for the unpinned busy one only",
        [warm("p", 1, pinned=True), warm("a", 2, in_flight=1, state=S.BUSY)],
        Limits(max_models=2),
        Room(
            wait="waiting for a (1 in flight) to finish a reply before stopping it "
            "(max_models = 2)",
            limits="max_models = 2",
        ),
    ),
    Row(
        "nothing evictable but pins: start over the limit",
        [warm("p", 1, pinned=True), warm("q", 2, pinned=True, in_flight=1)],
        COUNT_2,
        Room(
            over_limit="starting new over the limit (max_models = 2; p, q pinned)",
            limits="max_models = 2",
        ),
    ),
    Row("budget: fits", [warm("a", 1, gib=2)], BUDGET_4, Room(), need_gib=2),
    Row(
        "budget: does not fit, LRU goes",
        [warm("a", 1, gib=2), warm("b", 3, gib=1.5)],
        BUDGET_4,
        Room(
            evict="a",
            limits="memory_budget_gb = 4: 3.5 GiB in use + 1.0 GiB needed",
        ),
    ),
    Row(
        "budget alone, with room for more models by count",
        [warm("a", 1, gib=3.5)],
        Limits(max_models=5, memory_budget_bytes=4 * GIB),
        Room(evict="a", limits="memory_budget_gb = 4: 3.5 GiB in use + 1.0 GiB needed"),
    ),
    Row(
        "a start bigger than the budget with nothing else running still starts",
        [],
        BUDGET_4,
        Room(),
        need_gib=9,
    ),
    Row(
        "count and budget both broken: both named",
        [warm("a", 1, gib=3.5)],
        Limits(max_models=1, memory_budget_bytes=4 * GIB),
        Room(
            evict="a",
            limits="max_models = 1, memory_budget_gb = 4: 3.5 GiB in use + 1.0 GiB needed",
        ),
    ),
    Row(
        "budget, pinned in the way: over the limit",
        [warm("p", 1, gib=3.5, pinned=True)],
        BUDGET_4,
        Room(
            over_limit="starting new over the limit (memory_budget_gb = 4: 3.5 GiB in use + "
            "1.0 GiB needed; p pinned)",
            limits="memory_budget_gb = 4: 3.5 GiB in use + 1.0 GiB needed",
        ),
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.what for row in ROWS])
def test_make_room(row: Row) -> None:
    room = make_room("new", int(row.need_gib * GIB), row.others, row.limits)
    assert room == row.expected
    assert room.start_now == (room.evict is None and not room.wait)


@pytest.mark.parametrize(
    ("resident", "expected"),
    [
        (warm("a", 1), True),
        (warm("a", 1, pinned=True), False),
        (warm("a", 1, in_flight=1, state=S.BUSY), False),
        (warm("a", 1, waiting=1), False),
        (warm("a", 1, state=S.STARTING), False),
        (warm("a", 1, state=S.STOPPING), False),
    ],
)
def test_evictable(resident: Resident, expected: bool) -> None:
    assert evictable(resident) is expected


def test_evicting_one_at_a_time_reaches_the_limit() -> None:
    """Applying the decisions in turn stops the least recently used until the start fits."""
    others = [warm(name, used) for name, used in (("c", 3), ("a", 1), ("d", 4), ("b", 2))]
    stopped = []
    while (room := make_room("new", GIB, others, Limits(max_models=2))).evict:
        stopped.append(room.evict)
        others = [other for other in others if other.name != room.evict]
    assert stopped == ["a", "b", "c"] and room.start_now
