"""The model muxtui starts on: the order, never a failed or incompatible one, and `ask -v`."""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from muxtui.engine.config import (
    CacheConfig,
    Config,
    LocalModelConfig,
    ModelConfig,
    NetworkConfig,
    ProviderConfig,
)
from muxtui.engine.core import Engine
from muxtui.engine.default_model import ChoiceInputs, ModelChoice, pick_default
from muxtui.engine.errors import LocalServerError
from muxtui.engine.events import ChatMessage, ModelEntry, ServerState
from muxtui.engine.local.gemma import BUNDLED_GEMMA_NAME
from muxtui.engine.paths import Paths
from tests.conftest import MUXTUI, REPO_ROOT, muxtui_env
from tests.fake_server import FakeOpenAIServer
from tests.llama_support import require_extra
from tests.test_discovery import free_port

PY = shlex.quote(sys.executable)
FAKE = shlex.quote(str(REPO_ROOT / "tests" / "fake_server.py"))
S = ServerState


@pytest.fixture
def unused_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


def config_with(
    answering: str, silent: str = "", local: dict[str, str] | None = None, last: str = ""
) -> Config:
    """Model `m` on a provider at `answering`; `dead` on one at `silent`; `[local]` cmds."""
    providers = {"fake": ProviderConfig(base_url=answering)}
    models = {"m": ModelConfig("fake", "fake-model")}
    if silent:
        providers["gone"] = ProviderConfig(base_url=silent)
        models["dead"] = ModelConfig("gone", "fake-model")
    config = Config(
        providers=providers,
        models=models,
        local={name: LocalModelConfig(cmd=cmd) for name, cmd in (local or {}).items()},
        cache=CacheConfig(stall_timeout=10, stop_grace=2, ttl=0),
        network=NetworkConfig(discovery=False, retries=0),
    )
    config.ui.last_model = last
    return config


FAILS_AT_START = f"{PY} -c 'import sys; sys.exit(3)' --port {{port}}"
SERVES = f"{PY} {FAKE} --port {{port}}"


async def test_a_model_that_failed_to_start_is_never_the_default(
    fake_server: FakeOpenAIServer, paths: Paths
) -> None:
    config = config_with(fake_server.base_url, local={"broken": FAILS_AT_START}, last="broken")
    async with Engine(config, paths, discover=False) as engine:
        assert await engine.default_model() == ModelChoice("broken", "the last used model")
        with pytest.raises(LocalServerError):
            async for _ in engine.chat("broken", [ChatMessage("user", "hi")]):
                pass
        choice = await engine.default_model()
    assert choice == ModelChoice(
        "m", "a configured model that answers; last used broken failed to start"
    )


async def test_a_warm_local_server_comes_before_the_configured_models(
    fake_server: FakeOpenAIServer, paths: Paths
) -> None:
    config = config_with(fake_server.base_url, local={"here": SERVES})
    async with Engine(config, paths, discover=False) as engine:
        assert await engine.default_model() == ModelChoice("m", "a configured model that answers")
        await engine.servers.preload("here")
        assert await engine.default_model() == ModelChoice("here", "a warm local server")


async def test_a_provider_that_does_not_answer_is_passed_over(
    fake_server: FakeOpenAIServer, paths: Paths, unused_url: str
) -> None:
    config = config_with(fake_server.base_url, silent=unused_url, last="dead")
    async with Engine(config, paths, discover=False) as engine:
        choice = await engine.default_model()
    assert choice == ModelChoice(
        "m", "a configured model that answers; last used dead does not answer"
    )
    asked = [r.path for r in fake_server.requests]
    assert asked == ["/v1/models"]  # one question to the provider, no chat


async def test_the_bundled_model_when_nothing_configured_answers(
    paths: Paths, unused_url: str
) -> None:
    require_extra()
    config = config_with(unused_url)
    async with Engine(config, paths, discover=False) as engine:
        choice = await engine.default_model()
    assert choice is not None and choice.name == BUNDLED_GEMMA_NAME
    assert choice.reason == "the bundled model (nothing configured or discovered answers)"


# --- the order itself, over model rows (what the manager and discovery report) ---------------


def row(name: str, provider: str = "local", **fields: object) -> ModelEntry:
    local = provider == "local"
    state = fields.pop("state", S.COLD if local else S.REMOTE)
    return ModelEntry(name, provider, local, state, **fields)  # type: ignore[arg-type]


async def choose(
    rows: list[ModelEntry], answering: set[str], **inputs: object
) -> ModelChoice | None:
    async def answers(provider: str) -> bool:
        return provider in answering

    return await pick_default(rows, ChoiceInputs(**inputs), answers)  # type: ignore[arg-type]


async def test_the_order_of_preference() -> None:
    rows = [
        row("cfg", "box", source="config"),
        row("mine", source="config"),
        row("found", source="discovered"),
        row(BUNDLED_GEMMA_NAME, source="bundled"),
        row("ollama:llama3", "ollama", state=S.COLD, source="ollama"),
        row("openrouter:some/model", "openrouter", source="discovered"),
    ]
    every = {"box", "ollama", "openrouter"}
    loopback = frozenset({"ollama"})
    keyed = frozenset({"openrouter"})

    async def name(rows: list[ModelEntry], answering: set[str], **extra: object) -> str | None:
        choice = await choose(rows, answering, loopback=loopback, keyed=keyed, **extra)
        return choice.name if choice else None

    assert await name(rows, every) == "cfg"
    assert await name(rows, every - {"box"}) == "mine"
    assert await name(rows[2:], every) == "ollama:llama3"
    assert await name(rows[2:], set()) == "found"
    assert await name(rows[2:], set(), can_run_gguf=False) == BUNDLED_GEMMA_NAME
    assert await name(rows[5:], every) == "openrouter:some/model"  # after the bundled model
    warm = [*rows, row("ollama:qwen", "ollama", state=S.WARM, source="ollama")]
    assert await name(warm, every) == "ollama:qwen"  # a warm server on this machine
    warm_local = [*warm, row("busy-one", state=S.BUSY, source="config")]
    assert await name(warm_local, every) == "busy-one"
    last = {"last_model": "openrouter:some/model", "last_provider": "openrouter"}
    assert await name(warm_local, every, **last) == "openrouter:some/model"


async def test_failed_and_incompatible_models_are_never_picked() -> None:
    incompatible = "the runtime was built for instructions this CPU lacks (killed by SIGILL)"
    rows = [
        row("failed", source="config", state=S.FAILED, detail="exit status 1"),
        row(BUNDLED_GEMMA_NAME, source="bundled", incompatible=incompatible),
        row("remote", "box", source="config"),
    ]
    assert await choose(rows, set()) is None
    chosen = await choose(rows, {"box"}, last_model=BUNDLED_GEMMA_NAME, last_provider="local")
    assert chosen == ModelChoice(
        "remote",
        f"a configured model that answers; last used {BUNDLED_GEMMA_NAME} cannot run on this "
        "machine",
    )
    warm_but_marked = [row("w", state=S.WARM, incompatible=incompatible)]
    assert await choose(warm_but_marked, set()) is None


# --- `ask -v` ---------------------------------------------------------------------------------


def ask_verbose(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MUXTUI, "--config", str(config), "ask", "-v", "--max-tokens", "3", "hi"],
        capture_output=True,
        text=True,
        env=muxtui_env(),
        timeout=60,
        check=False,
    )


def test_ask_without_a_model_says_which_it_picked_and_why(
    fake_server: FakeOpenAIServer, write_config: Callable[[str], Path], unused_url: str
) -> None:
    text = f"""
[network]
discovery = false
retries = 0

[providers.fake]
base_url = "{fake_server.base_url}"

[providers.gone]
base_url = "{unused_url}"

[models.little]
provider = "fake"
id = "fake-model"

[models.dead]
provider = "gone"

[ui]
last_model = "dead"
"""
    result = ask_verbose(write_config(text))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "tok tok tok \n"  # --max-tokens 3
    first = result.stderr.splitlines()[0]
    assert first == (
        "muxtui: model little: a configured model that answers; last used dead does not answer"
    )
    chats = [r for r in fake_server.requests if r.path.endswith("/chat/completions")]
    assert [r.json["model"] for r in chats] == ["fake-model"]  # type: ignore[index]

    result = ask_verbose(write_config(text.replace('"dead"', '"little"')))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == "muxtui: model little: the last used model"
