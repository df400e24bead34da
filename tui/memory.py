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


def _clear_textual_caches() -> None:
    """Empty the caches that keep released widgets' rendered lines alive.

    Textual's `StylesCache.get_inner_outer` is an `lru_cache` on a method: its 1,024 keys hold
    the caches of as many widgets, released or not, with every line they rendered (in a long
    conversation, tens of megabytes). It fills again from the widgets still shown.
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
    _clear_textual_caches()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)  # returns whether anything was given back: either way is fine
