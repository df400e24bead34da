"""Discovery that keeps up: servers started or stopped after the engine, found in the background
and on `rediscover()`, labelled as on this machine. Test servers listen on free ports that
`DiscoveryTargets` points at, never on 8080 or 11434."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest

from muxtui.engine.config import Config, NetworkConfig
from muxtui.engine.core import Engine
from muxtui.engine.discovery import DiscoveryTargets
from muxtui.engine.errors import UnknownModelError
from muxtui.engine.events import ModelEntry, ModelsChanged, ServerState
from muxtui.engine.local.gemma import BUNDLED_GEMMA_NAME
from muxtui.engine.paths import Paths
from tests.fake_server import FakeOpenAIServer
from tests.llama_support import require_extra


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def ports() -> tuple[int, int]:
    """Free ports standing in for Ollama's 11434 and llama-server's 8080."""
    return free_port(), free_port()


def targets_for(ports: tuple[int, int]) -> DiscoveryTargets:
    ollama, openai = ports
    return DiscoveryTargets(
        ollama_url=f"http://127.0.0.1:{ollama}",
        openai_compatible_url=f"http://127.0.0.1:{openai}/v1",
        probe_timeout=2.0,
        fetch_catalogs=False,
    )


def engine_for(paths: Paths, ports: tuple[int, int], interval: float = 0.0) -> Engine:
    config = Config(network=NetworkConfig(discovery_interval=interval))
    return Engine(config, paths, discovery_targets=targets_for(ports))


def found(engine: Engine) -> dict[str, ModelEntry]:
    return {e.name: e for e in engine.list_models() if e.source in ("ollama", "discovered")}


async def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait (bounded in time) for the engine's background work to make `condition` true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_a_server_started_later_is_found_on_rediscover_and_dropped_when_it_stops(
    paths: Paths, ports: tuple[int, int]
) -> None:
    async with engine_for(paths, ports) as engine:
        await engine.wait_discovered(timeout=5.0)
        assert found(engine) == {}
        with FakeOpenAIServer(["late-model"], port=ports[1]):
            entries = {e.name: e for e in await engine.rediscover()}
            entry = entries["local-8080:late-model"]
            # on this machine, answering with its model loaded: warm, not remote; muxtui did
            # not start it, so it cannot stop it either (local stays False)
            assert (entry.state, entry.local, entry.provider) == (
                ServerState.WARM,
                False,
                "local-8080",
            )
            assert entry.detail == f"on this machine (127.0.0.1:{ports[1]}), started outside muxtui"
            choice = await engine.default_model()
            assert choice is not None and choice.name == "local-8080:late-model"
        await engine.rediscover()
        assert found(engine) == {}


async def test_background_probes_find_a_late_ollama_and_notice_it_stop(
    paths: Paths, ports: tuple[int, int]
) -> None:
    events: list[object] = []
    async with engine_for(paths, ports, interval=0.05) as engine:
        await engine.wait_discovered(timeout=5.0)
        engine.add_listener(events.append)
        assert found(engine) == {}
        with FakeOpenAIServer(["llama3", "qwen"], port=ports[0]) as ollama:
            await until(lambda: "ollama:qwen" in found(engine), "the background probe")
            states = {name: e.state for name, e in found(engine).items()}
            # /api/ps says llama3 is loaded: warm; qwen is on disk: Ollama loads it on demand
            assert states == {"ollama:llama3": ServerState.WARM, "ollama:qwen": ServerState.COLD}
            announced = [e for e in events if isinstance(e, ModelsChanged)]
            assert len(announced) == 1 and "ollama:qwen" in announced[0].names
            asked = len(ollama.requests)
            await until(lambda: len(ollama.requests) >= asked + 6, "three more polls")
            # polls that find nothing new announce nothing
            assert len([e for e in events if isinstance(e, ModelsChanged)]) == 1
        await until(lambda: not found(engine), "the stopped server to be dropped")
        assert len([e for e in events if isinstance(e, ModelsChanged)]) == 2


async def test_with_discovery_off_nothing_is_probed_even_on_rediscover(
    paths: Paths, fake_server: FakeOpenAIServer
) -> None:
    targets = DiscoveryTargets(
        ollama_url=fake_server.root_url, openai_compatible_url=fake_server.base_url
    )
    config = Config(network=NetworkConfig(discovery=False, discovery_interval=0.05))
    async with Engine(config, paths, discovery_targets=targets) as engine:
        await engine.rediscover()
        await asyncio.sleep(0.2)
        assert found(engine) == {}
    assert fake_server.requests == []


async def test_with_discovery_off_the_model_folders_and_bundled_model_still_resolve(
    paths: Paths, fake_server: FakeOpenAIServer
) -> None:
    require_extra()
    paths.models_dir.mkdir(parents=True, exist_ok=True)
    (paths.models_dir / "mine.gguf").write_bytes(b"GGUF" + bytes(64))  # checked, never started
    config = Config(network=NetworkConfig(discovery=False))
    async with Engine(config, paths) as engine:
        await engine.check_model(BUNDLED_GEMMA_NAME)
        await engine.check_model("mine")
        with pytest.raises(UnknownModelError):
            await engine.check_model("ollama:fake-model")
    assert fake_server.requests == []
