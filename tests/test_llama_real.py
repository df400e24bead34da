"""The real thing: the `local` extra's llama-server and Gemma model through the ServerManager.

These run whenever the extra is installed and always in CI (CI=true), where a missing extra
is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import psutil
import pytest

from muxtui.engine.config import CacheConfig, Config
from muxtui.engine.core import Engine
from muxtui.engine.events import ServerState
from muxtui.engine.local import process as proctree
from muxtui.engine.local.gemma import BUNDLED_GEMMA_NAME
from muxtui.engine.local.manager import ServerManager
from muxtui.engine.paths import Paths
from tests.llama_support import ask, place_bundled_gemma, place_model
from tests.test_servers import Recorder, group_gone

pytestmark = pytest.mark.llama

SHORT_QUESTION = "What is the capital of France?"
# Three times as long, so a prompt that reaches the model has about three times the tokens.
LONG_QUESTION = (
    "What is the capital of France? I am planning a trip there next spring with my family "
    "and would like to know which city to fly into first."
)


@pytest.fixture
async def gemma_manager(
    gemma_file: Path, paths: Paths
) -> AsyncIterator[tuple[ServerManager, Recorder]]:
    """A manager whose bundled Gemma entry uses the session's file (no second assembly)."""
    place_bundled_gemma(gemma_file, paths)
    recorder = Recorder()
    config = Config(cache=CacheConfig(stall_timeout=60, stop_grace=5, ttl=0))
    manager = ServerManager(config, paths, recorder)
    yield manager, recorder
    await manager.aclose()
    assert proctree.live_groups() == []


async def test_gemma_cold_start_stream_warm_hit_unload(
    gemma_manager: tuple[ServerManager, Recorder],
) -> None:
    manager, recorder = gemma_manager
    await manager.refresh()
    assert manager.has(BUNDLED_GEMMA_NAME)
    statuses: list[str] = []

    async with manager.acquire(BUNDLED_GEMMA_NAME, on_status=statuses.append) as endpoint:
        text = await stream_reply(endpoint.base_url, endpoint.model_id)
        first_pid = endpoint.pid
    assert text.strip(), "the model streamed no text"
    assert any(s.startswith(f"{BUNDLED_GEMMA_NAME} ready in") for s in statuses)
    # llama-server's own process: the bundled binary, its own process group.
    server = psutil.Process(first_pid)
    assert Path(server.exe()).name == "llama-server" and os.getpgid(first_pid) == first_pid

    async with manager.acquire(BUNDLED_GEMMA_NAME) as endpoint:
        assert endpoint.pid == first_pid  # a warm hit: no new process
        await stream_reply(endpoint.base_url, endpoint.model_id)
    (entry,) = [e for e in manager.entries() if e.name == BUNDLED_GEMMA_NAME]
    assert (entry.hits, entry.misses, entry.state) == (1, 1, ServerState.WARM)
    assert entry.load_time_s is not None and entry.source == "bundled"

    await manager.sample_memory()
    (entry,) = [e for e in manager.entries() if e.name == BUNDLED_GEMMA_NAME]
    assert entry.rss_bytes > 50_000_000  # the model is in memory

    await manager.unload(BUNDLED_GEMMA_NAME)
    assert group_gone(first_pid)
    assert recorder.states(BUNDLED_GEMMA_NAME) == [
        ServerState.STARTING,
        ServerState.WARM,
        ServerState.BUSY,
        ServerState.WARM,
        ServerState.BUSY,
        ServerState.WARM,
        ServerState.STOPPING,
        ServerState.COLD,
    ]
    assert proctree.live_groups() == []


async def stream_reply(base_url: str, model_id: str) -> str:
    """Stream a short completion and return its text."""
    body = {
        "model": model_id,
        "messages": [{"role": "user", "content": "Write one word."}],
        "max_tokens": 8,
        "stream": True,
    }
    parts: list[str] = []
    async with (
        httpx.AsyncClient(timeout=60) as client,
        client.stream("POST", f"{base_url}/chat/completions", json=body) as response,
    ):
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[6:]).get("choices", []):
                parts.append(choice.get("delta", {}).get("content") or "")
    return "".join(parts)


@pytest.fixture
async def gemma_engine(gemma_file: Path, paths: Paths) -> AsyncIterator[Engine]:
    """An engine (no network discovery) that finds the bundled Gemma and one GGUF in a model
    folder, the same file under another name."""
    place_bundled_gemma(gemma_file, paths)
    place_model(gemma_file, paths.models_dir / "found-here.gguf")
    config = Config(cache=CacheConfig(stall_timeout=60, stop_grace=5, ttl=0))
    async with Engine(config, paths, discover=False) as engine:
        await engine.servers.refresh()
        yield engine
    assert proctree.live_groups() == []


@pytest.mark.parametrize("model", [BUNDLED_GEMMA_NAME, "found-here"])
async def test_the_prompt_reaches_the_model(gemma_engine: Engine, model: str) -> None:
    """The server's own prompt token count grows with the question: the template formats the
    conversation instead of replacing it (a literal template gives 3 tokens for any question)."""
    (entry,) = [e for e in gemma_engine.list_models() if e.name == model]
    assert entry.source == ("bundled" if model == BUNDLED_GEMMA_NAME else "discovered")
    short = await ask(gemma_engine, model, SHORT_QUESTION, max_tokens=1)
    long = await ask(gemma_engine, model, LONG_QUESTION, max_tokens=1)
    short_tokens, long_tokens = short.stats.prompt_tokens, long.stats.prompt_tokens
    assert short_tokens > len(SHORT_QUESTION.split()), (short_tokens, long_tokens)
    # every extra word of the long question reached the model as at least one token
    extra_words = len(LONG_QUESTION.split()) - len(SHORT_QUESTION.split())
    assert long_tokens - short_tokens >= extra_words, (short_tokens, long_tokens)


async def test_the_bundled_model_is_formatted_as_gemma(
    gemma_engine: Engine, read_props: Callable[[int], dict[str, object]]
) -> None:
    """The bundled Gemma gets Gemma's turn markers, not ChatML (its GGUF has no template)."""
    await ask(gemma_engine, BUNDLED_GEMMA_NAME, SHORT_QUESTION, max_tokens=1)
    (entry,) = [e for e in gemma_engine.list_models() if e.name == BUNDLED_GEMMA_NAME]
    assert entry.port is not None
    props = read_props(entry.port)
    assert props.get("chat_template") == "gemma"


@pytest.fixture
def read_props() -> Callable[[int], dict[str, object]]:
    """GET a local llama-server's /props."""

    def read(port: int) -> dict[str, object]:
        response = httpx.get(f"http://127.0.0.1:{port}/props", timeout=10)
        response.raise_for_status()
        props = response.json()
        assert isinstance(props, dict)
        return props

    return read
