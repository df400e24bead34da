"""The bundled runtime runs on every x86_64 CPU with AVX2: natively, and under
`qemu-x86_64 -cpu Haswell` (AVX2, FMA, F16C; no AVX-512, no VNNI, no AMX), which stands in for
the CPUs this machine is not. In CI (CI=true) neither may skip.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from muxtui.engine.config import CacheConfig, Config, LocalModelConfig
from muxtui.engine.core import Engine
from muxtui.engine.local import process as proctree
from muxtui.engine.local.runtime import bundled_llama_server
from muxtui.engine.paths import Paths
from tests.llama_support import IN_CI, ask, assembled_gemma

pytestmark = pytest.mark.llama

# Small context and no warm-up: under emulation every instruction costs ~100 times more.
RUNTIME_ARGS = "-m {path} --host {host} --port {port} --no-jinja --chat-template gemma"
SMALL = "-c 256 -t 2 --no-warmup"
QEMU_HASWELL = ("qemu-x86_64", "-cpu", "Haswell")


@pytest.fixture(scope="session")
def gemma_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Gemma GGUF, assembled once per test session."""
    return assembled_gemma(tmp_path_factory)


def qemu() -> str:
    """The qemu-x86_64 binary: skip without it, fail in CI, which must run this test."""
    found = shutil.which(QEMU_HASWELL[0])
    if not found:
        message = "qemu-x86_64 is not installed (apt-get install qemu-user)"
        if IN_CI:
            pytest.fail(f"{message}; .ci/run installs it, and CI must run the Haswell test")
        pytest.skip(message)
    return found


async def engine_for(paths: Paths, gemma_file: Path, prefix: str) -> Engine:
    """An engine with one `[local]` model: the bundled llama-server, behind `prefix`."""
    command = f"{prefix} {shlex.quote(bundled_llama_server())} {RUNTIME_ARGS} {SMALL}".strip()
    config = Config(
        local={"gemma": LocalModelConfig(cmd=command, path=str(gemma_file))},
        cache=CacheConfig(stall_timeout=120, stop_grace=5, ttl=0),
    )
    return Engine(config, paths, discover=False)


@pytest.fixture
async def closing() -> AsyncIterator[list[Engine]]:
    """Engines to close after the test, with no server process left behind."""
    engines: list[Engine] = []
    yield engines
    for engine in engines:
        await engine.aclose()
    assert proctree.live_groups() == []


async def test_the_bundled_runtime_answers_natively(
    gemma_file: Path, paths: Paths, closing: list[Engine]
) -> None:
    engine = await engine_for(paths, gemma_file, "")
    closing.append(engine)
    finished = await ask(engine, "gemma", "Hi")
    (entry,) = [e for e in engine.list_models() if e.name == "gemma"]
    assert entry.pid is not None
    server = psutil.Process(entry.pid)
    assert Path(server.exe()).name == "llama-server"
    assert server.environ().get("OMP_WAIT_POLICY") == "passive"
    assert finished.stats.completion_tokens >= 1 and finished.text.strip()
    assert finished.stats.prompt_tokens > 3  # the conversation, formatted, reached the model


@pytest.mark.timeout(600)
async def test_the_bundled_runtime_answers_on_a_haswell_cpu(
    gemma_file: Path, paths: Paths, closing: list[Engine]
) -> None:
    """A build with AVX-512, VNNI or AMX code dies here with SIGILL; an AVX2 build answers."""
    engine = await engine_for(paths, gemma_file, shlex.join([qemu(), *QEMU_HASWELL[1:]]))
    closing.append(engine)
    finished = await ask(engine, "gemma", "Hi", max_tokens=2)
    (entry,) = [e for e in engine.list_models() if e.name == "gemma"]
    assert entry.pid is not None
    assert Path(psutil.Process(entry.pid).exe()).name == "qemu-x86_64"  # really emulated
    assert finished.stats.completion_tokens >= 1 and finished.text.strip()
    assert finished.stats.prompt_tokens > 3
