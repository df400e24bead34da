"""A batch on the real bundled llama-server and Gemma model (the `local` extra)."""

from __future__ import annotations

from pathlib import Path

import pytest

from muxtui.engine.batch.runner import BatchSpec
from muxtui.engine.config import CacheConfig, Config, NetworkConfig
from muxtui.engine.core import Engine
from muxtui.engine.local.gemma import BUNDLED_GEMMA_NAME
from muxtui.engine.paths import Paths
from tests.batch_support import assert_each_once, records, write_jsonl
from tests.llama_support import place_bundled_gemma

pytestmark = pytest.mark.llama


async def test_a_batch_runs_on_the_bundled_gemma_with_the_slots_it_reports(
    gemma_file: Path,
    paths: Paths,
    tmp_path: Path,
) -> None:
    place_bundled_gemma(gemma_file, paths)
    config = Config(
        cache=CacheConfig(stall_timeout=60, stop_grace=5, ttl=0),
        network=NetworkConfig(discovery=False),
    )
    rows = [{"custom_id": f"g{n}", "prompt": "Once upon a time", "max_tokens": 4} for n in range(6)]
    source = write_jsonl(tmp_path / "stories.jsonl", rows)
    engine = Engine(config, paths, discover=False)
    try:
        await engine.servers.refresh()  # finds the bundled model, as discovery would
        summary = await engine.run_batch(BatchSpec(source, model=BUNDLED_GEMMA_NAME))
    finally:
        await engine.aclose()
    assert summary.exit_status == 0, summary.progress.message
    assert_each_once({f"g{n}" for n in range(6)}, summary.output)
    for record in records(summary.output):
        body = record["response"]["body"]
        assert body["choices"][0]["message"]["content"] is not None
        assert body["usage"]["completion_tokens"] <= 4
    assert any("from the slots its server reports" in note for note in summary.notes), summary.notes
