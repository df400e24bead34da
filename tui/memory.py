"""Giving memory back to the system after something big (a long conversation) is let go.

Textual's widgets refer to each other in cycles, so released views wait for a full collection
before they are freed; glibc's allocator then keeps the freed pages in its arenas unless asked
to trim them. `give_back` does both, at a moment the caller chooses (the app is idle then: a
full collection walks every object and takes tens of milliseconds).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from textual.timer import Timer
    from textual.widget import Widget

# Once this many views have been released and the log has been still for a while, the memory
# they held is given back to the system. `give_back` walks every object (100-200 ms on a
# small machine): it waits until the person has most likely settled on what comes next.
RECLAIM_AFTER_VIEWS = 16
RECLAIM_AFTER_S = 2.0
# Released views refer to themselves in cycles: only a full collection frees them. Scrolling
# far releases hundreds; collected every this many, their memory is reused for the next
# instead of the heap growing (what `give_back` froze is not walked: each takes a few ms).
COLLECT_EVERY_VIEWS = 24


def _clear_caches() -> None:
    """Empty the cache that keeps released widgets' rendered lines alive.

    Textual's `StylesCache.get_inner_outer` is an `lru_cache` on a method: its 1,024 keys hold
    the caches of as many widgets, released or not, with every line they rendered (in a long
    conversation, tens of megabytes). It fills again from what is on screen. (Textual's other
    functools caches hold values, not widgets; emptying them all broke its rendering.)
    """
    try:
        from textual._styles_cache import StylesCache

        StylesCache.get_inner_outer.cache_clear()
    except (ImportError, AttributeError):  # another Textual: nothing of the kind to clear
        pass


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`; None elsewhere (musl, macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim  # absent from musl: AttributeError
    except (OSError, AttributeError):
        return None
    return trim


def give_back() -> None:
    """Free what only cycles keep alive, and hand the allocator's free pages to the system.

    What is left is frozen (as the imports are at start-up): the collections Python runs by
    itself then walk only what was made since, so one no longer stalls the next conversation
    being opened for 50-100 ms; the next `give_back` thaws it all first, so nothing frozen
    stays garbage for longer than that.
    """
    _clear_caches()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)  # returns whether anything was given back: either way is fine


class ReleasedViews:
    """When a scrolling log gives the memory of the views it released back: a cheap
    collection now and then while it scrolls, and `give_back` once it is still."""

    def __init__(self, owner: Widget, still: Callable[[], bool]) -> None:
        self._owner = owner
        self._still = still
        self._released = 0  # since memory was last given back
        self._uncollected = 0  # released while scrolling, since the last collection
        self._timer: Timer | None = None

    def removed(self, count: int) -> None:
        """`count` views were released."""
        self._released += count
        if self._released >= RECLAIM_AFTER_VIEWS:
            self._later()

    def left(self) -> None:
        """A conversation was left: give back whatever it held, once the log is still."""
        self._later()

    def scrolled_past(self, count: int) -> None:
        """`count` of the released views were scrolled far past."""
        self._uncollected += count
        if self._uncollected >= COLLECT_EVERY_VIEWS:
            self._uncollected = 0
            _clear_caches()
            gc.collect()

    def _later(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self._owner.set_timer(RECLAIM_AFTER_S, self._reclaim)

    def _reclaim(self) -> None:
        self._timer = None
        if not self._still():  # still scrolling or opening: later
            self._later()
            return
        self._released = self._uncollected = 0
        give_back()
