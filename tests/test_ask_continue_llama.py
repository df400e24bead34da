"""`muxtui ask -c` holds up at length on the real bundled model's 2,048-token context."""

from __future__ import annotations

import subprocess

import pytest

from muxtui.engine.config import Config
from muxtui.engine.core import Engine
from muxtui.engine.local.gemma import BUNDLED_GEMMA_NAME
from muxtui.engine.paths import Paths
from tests.conftest import MUXTUI, muxtui_env
from tests.llama_support import assembled_gemma, place_bundled_gemma

pytestmark = pytest.mark.llama

WORDS = ("river", "stone", "lantern", "orchard", "violet")
WORDS += ("harbour", "meadow", "copper", "thistle", "sparrow")


def _prompt(turn: int) -> str:
    """About 300 tokens of plain text that differs from turn to turn."""
    words = [f"{WORDS[(turn + i) % len(WORDS)]}{i % 7}" for i in range(110)]
    return f"Note {turn}: {' '.join(words)}. Summarise note {turn} in one word."


# Twelve cold starts of the bundled server, each reading up to 2,048 tokens on 2 CPU cores: about
# 90 s on a quiet machine, more when the cores are shared.
@pytest.mark.timeout(480)
def test_twelve_long_turns_continue_within_the_context(
    tmp_path_factory: pytest.TempPathFactory, paths: Paths
) -> None:
    place_bundled_gemma(assembled_gemma(tmp_path_factory), paths)
    notices = []
    for turn in range(12):
        flags = ["-c"] if turn else []
        options = ["--model", BUNDLED_GEMMA_NAME, "--max-tokens", "8", "-v"]
        result = subprocess.run(
            [*MUXTUI, "ask", *flags, *options, _prompt(turn)],
            capture_output=True,
            text=True,
            env=muxtui_env(),
            timeout=240,
            check=False,
        )
        assert result.returncode == 0, f"turn {turn}: {result.stderr}"
        assert result.stdout.strip(), f"turn {turn} printed no reply"
        notices += [line for line in result.stderr.splitlines() if "not sent" in line]
    # The later turns no longer fit whole: each says what it left out.
    assert notices, "no turn reported trimmed history"
    assert "gemma-3-270m has 2,048 tokens" in notices[-1]
    stats = [line for line in result.stderr.splitlines() if " prompt + " in line]
    prompt_tokens = int(stats[-1].split(" prompt + ")[0].rsplit("· ", 1)[1])
    assert 600 < prompt_tokens < 2048  # earlier turns were sent, trimmed to the window
    history = _stored(paths)
    assert len(history) == 24 and all(status == "complete" for status in history)


def _stored(paths: Paths) -> list[str]:
    import asyncio

    async def read() -> list[str]:
        async with Engine(Config(), paths, discover=False) as engine:
            (latest,) = await engine.list_conversations(limit=1)
            return [message.status for message in await engine.conversation_messages(latest.id)]

    return asyncio.run(read())
