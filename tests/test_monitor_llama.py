"""The Monitor on the real bundled llama-server and Gemma (the `local` extra): its process tree
measured while it generates, and its own /metrics and /slots read."""

from __future__ import annotations

import asyncio

import pytest

from muxtui.engine.config import CacheConfig, Config, MonitorConfig
from muxtui.engine.core import Engine
from muxtui.engine.events import ChatMessage, ChatParams
from muxtui.engine.local.gemma import BUNDLED_GEMMA_NAME
from muxtui.engine.monitor.samples import Sample
from muxtui.engine.paths import Paths
from tests.test_llama_real import gemma_manager  # noqa: F401  (a fixture)

pytestmark = pytest.mark.llama


async def test_gemma_is_measured_while_it_generates(
    gemma_manager: object,  # noqa: F811  (puts the session's model where the bundled entry looks)
    paths: Paths,
) -> None:
    config = Config(
        cache=CacheConfig(stall_timeout=60, stop_grace=5, ttl=0),
        monitor=MonitorConfig(interval=0.2),
    )
    engine = Engine(config, paths, discover=False)
    seen: list[Sample] = []
    try:
        await engine.servers.refresh()
        samples = engine.samples()
        seen.append(await anext(samples))

        async def watch() -> None:
            async for sample in samples:
                seen.append(sample)

        watcher = asyncio.create_task(watch())
        messages = [ChatMessage("user", "Once upon a time, in a land far away,")]
        async for _event in engine.chat(BUNDLED_GEMMA_NAME, messages, ChatParams(max_tokens=60)):
            pass
        for _ in range(10):  # a few samples after the reply: the counters settle
            await asyncio.sleep(0.2)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await samples.aclose()
    finally:
        await engine.aclose()
    gemma = [s.server(BUNDLED_GEMMA_NAME) for s in seen if s.server(BUNDLED_GEMMA_NAME)]
    assert gemma, "the running server never showed up in a sample"
    assert max(g.rss for g in gemma if g) > 150 * 10**6  # weights, KV cache, buffers
    # The bundled server runs without --metrics: tokens/s and KV use come from /slots.
    assert any(g and (g.tokens_per_s or 0) > 0 for g in gemma), "no tokens/s from /slots"
    assert any(g and g.requests_processing == 1 for g in gemma)
    assert any(g and (g.kv_used or 0) > 0 for g in gemma)  # the busy slot's context, /slots
