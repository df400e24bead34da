"""Giving memory back: what only cycles keep alive is freed, Textual's caches let go of it."""

from __future__ import annotations

import gc
import weakref

from textual._styles_cache import StylesCache
from textual.color import Color

from muxtui.tui.memory import give_back


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only a collection frees it


def test_give_back_frees_cycles_and_empties_textual_caches() -> None:
    cache = StylesCache()
    cache.get_inner_outer(Color(0, 0, 0), Color(10, 10, 10))  # keeps `cache` alive
    kept = weakref.ref(cache)
    node = _Node()
    gone = weakref.ref(node)
    del cache, node
    frozen_before = gc.get_freeze_count()
    try:
        give_back()
        assert gone() is None
        assert kept() is None  # the lru_cache let go of it
        assert StylesCache.get_inner_outer.cache_info().currsize == 0
        assert gc.get_freeze_count() > 0  # what is left is frozen until the next time
    finally:
        gc.unfreeze()
        if frozen_before:
            gc.freeze()
