"""Shared fixtures: every test runs with its own config, data, cache and log dirs."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from muxtui.engine.paths import Paths

if TYPE_CHECKING:
    from muxtui.engine.config import Config
    from muxtui.engine.core import Engine
    from muxtui.engine.retry import RetryPolicy

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point HOME and the XDG dirs at a temp dir so no test touches the real user's files."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var, sub in (
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_CACHE_HOME", ".cache"),
        ("XDG_STATE_HOME", ".local/state"),
    ):
        monkeypatch.setenv(var, str(home / sub))
    for var in ("MUXTUI_CONFIG", "OPENROUTER_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def paths(isolated_home: Path) -> Paths:
    """The platform paths as muxtui resolves them inside the isolated home."""
    return Paths.default()


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write TOML text to a config file and return its path."""

    def write(text: str, name: str = "config.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
async def engines(paths: Paths) -> AsyncIterator[Callable[[Config, RetryPolicy], Engine]]:
    """Makes engines (no discovery) on the isolated paths and closes them after the test."""
    from muxtui.engine.core import Engine

    made: list[Engine] = []

    def make(config: Config, policy: RetryPolicy) -> Engine:
        engine = Engine(config, paths, discover=False, retry_policy=policy)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        await engine.aclose()


@pytest.fixture
def fake_server() -> Iterator[object]:
    """A started loopback OpenAI/Ollama-compatible test server."""
    from tests.fake_server import FakeOpenAIServer

    server = FakeOpenAIServer().start()
    try:
        yield server
    finally:
        server.stop()


def muxtui_env(**extra: str) -> dict[str, str]:
    """The environment for running `muxtui` as a subprocess inside the isolated home."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(extra)
    return env


MUXTUI = [sys.executable, "-m", "muxtui"]


def permission_bits_enforced() -> list[str]:
    """A command prefix under which file modes bind this process's children, even as root.

    Root ignores file modes through CAP_DAC_OVERRIDE; the tests run as root in CI, so an
    unreadable or unwritable path is reproduced by dropping that capability in the child.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux): file modes cannot bind root")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}"]


@pytest.fixture(scope="session")
def gemma_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled Gemma GGUF, assembled once per test session (the `llama` tests)."""
    from tests.llama_support import assembled_gemma

    return assembled_gemma(tmp_path_factory)
