"""The done-when of "one owner of the local servers", on the real bundled llama-server: an
engine started while `muxtui serve` runs uses serve's llama-server for the bundled Gemma, and no
second llama-server starts for the same model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from muxtui.engine.config import load_config
from muxtui.engine.core import Engine
from muxtui.engine.events import ChatFinished, ChatMessage, ChatParams, ModelEntry, ServerState
from muxtui.engine.local.gemma import BUNDLED_GEMMA_NAME
from muxtui.engine.paths import Paths
from tests.llama_support import assembled_gemma, place_bundled_gemma
from tests.serve_process import own_model_servers, running_serve

pytestmark = pytest.mark.llama

LLAMA = "llama-server"


async def test_an_engine_uses_serves_llama_server_and_starts_none(
    tmp_path_factory: pytest.TempPathFactory, write_config: Callable[[str], Path]
) -> None:
    config_file = write_config("[network]\ndiscovery = false\n")
    paths = Paths.default(config_file)
    place_bundled_gemma(assembled_gemma(tmp_path_factory), paths)
    with running_serve(config_file, paths) as serve:
        engine = Engine(load_config(config_file, must_exist=True), paths, discover=False)
        async with engine:
            finished = None
            params = ChatParams(max_tokens=8, temperature=0.0)
            async for event in engine.chat(
                BUNDLED_GEMMA_NAME, [ChatMessage("user", "Say hello.")], params
            ):
                if isinstance(event, ChatFinished):
                    finished = event
            assert finished is not None and finished.text.strip()
            (server,) = serve.local_servers(LLAMA)  # serve's one llama-server
            assert not own_model_servers(serve, marker=LLAMA)  # and none started here

            def row() -> ModelEntry:
                return next(e for e in engine.list_models() if e.name == BUNDLED_GEMMA_NAME)

            deadline = time.monotonic() + 20  # the rows are fetched again after each reply
            while row().pid != server.pid:
                assert time.monotonic() < deadline, f"serve's server not listed: {row()}"
                await asyncio.sleep(0.05)
            assert row().state in (ServerState.WARM, ServerState.BUSY)
            assert "served by muxtui serve" in row().detail
