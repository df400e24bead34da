"""Snapshot tests of the layout and themes: chat (dark, light), first run, Models pane, and the
narrow 80×24 layout (folded conversation list, fewer table columns)."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from muxtui.engine.config import load_config
from muxtui.engine.core import Engine
from muxtui.engine.events import ChatStats
from muxtui.engine.paths import Paths
from muxtui.tui.app import MuxtuiApp
from muxtui.tui.panes.chat.chat_log import ChatLog
from muxtui.tui.panes.chat.prompt_input import PromptInput
from tests.fake_server import FakeOpenAIServer
from tests.test_tui_support import (
    chat_pane,
    local_entry,
    provider_config,
    started,
    wait_until,
    without_local_extra,
)

SIZE = (120, 40)
NARROW = (80, 24)
SnapCompare = Callable[..., bool]

REPLY = """\
Here is a **warm server** check in Python:

```python
import httpx

def is_ready(port: int) -> bool:
    return httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
```

- polls `/health` every 100 ms
- never sleeps a fixed time
"""
STATS = ChatStats(
    model="fake",
    provider="fake",
    prompt_tokens=12,
    completion_tokens=58,
    ttft_s=0.142,
    tokens_per_s=41.7,
    total_s=1.53,
)


def app_at_default_path(home: Path, config_text: str) -> MuxtuiApp:
    """An app whose config lives at the default path, so every path on screen is stable."""
    paths = Paths.default()
    assert paths.config_file.is_relative_to(home)
    paths.config_file.parent.mkdir(parents=True, exist_ok=True)
    paths.config_file.write_text(config_text, encoding="utf-8")
    config = load_config(paths.config_file)
    return MuxtuiApp(config, paths)


async def steady(pilot: Pilot[int]) -> None:
    """Stop cursors blinking so every screenshot is the same."""
    for prompt in pilot.app.query(PromptInput):
        prompt.cursor_blink = False
    for box in pilot.app.screen.query(Input):
        box.cursor_blink = False
    await pilot.pause()


# The conversation list shows dates: the snapshots use a fixed one (2020-01-02) for every run.
FIXED_DAY = 1577966400.0


def set_dates(db_path: Path, dates: dict[int, float]) -> None:
    """Give conversations fixed creation and update times."""
    db = sqlite3.connect(db_path)
    with db:
        db.executemany(
            "UPDATE conversations SET created_at = ?, updated_at = ? WHERE id = ?",
            [(stamp, stamp, conversation_id) for conversation_id, stamp in dates.items()],
        )
    db.close()


def chat_setup(theme: str) -> Callable[[Pilot[int]], Awaitable[None]]:
    """Fill the history with one conversation, open it, and switch to `theme`."""

    async def run_before(pilot: Pilot[int]) -> None:
        app = await started(pilot)
        history = app.engine.history
        older = await history.new_conversation("Which servers are warm?", "fake")
        await history.add_message(older.id, "user", "Which servers are warm?")
        conversation = await history.new_conversation("Readiness without sleeping", "fake")
        await history.add_message(conversation.id, "user", "How do I know a model server is ready?")
        await history.add_message(conversation.id, "assistant", REPLY, model="fake", stats=STATS)
        await history.add_message(conversation.id, "user", "And a long one?")
        await history.add_message(
            conversation.id, "assistant", "Once upon a time", model="fake", status="stopped"
        )
        set_dates(
            app.engine.paths.history_db, {older.id: FIXED_DAY, conversation.id: FIXED_DAY + 60}
        )
        pane = chat_pane(app)
        await pane.refresh_conversations()
        await pane.open_conversation(conversation.id)
        await pane.refresh_conversations()
        log = app.query_one(ChatLog)
        await wait_until(pilot, lambda: log.is_settled, "the conversation to be shown")
        app.theme = theme
        await steady(pilot)

    return run_before


@pytest.mark.parametrize("theme", ["muxtui-dark", "muxtui-light"])
def test_chat_pane_snapshot(
    theme: str,
    snap_compare: SnapCompare,
    fake_server: FakeOpenAIServer,
    isolated_home: Path,
) -> None:
    app = app_at_default_path(isolated_home, provider_config(fake_server.base_url))
    assert snap_compare(app, terminal_size=SIZE, run_before=chat_setup(theme))


def test_first_run_empty_state_snapshot(
    snap_compare: SnapCompare, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_local_extra(monkeypatch)  # the guide for a machine with nothing to chat with
    paths = Paths.default()
    assert not paths.config_file.exists()
    config = load_config(paths.config_file)
    # Nothing is configured; discovery is off for the engine so that what this machine has
    # installed or running (the `local` extra, Ollama) cannot change the picture.
    engine = Engine(config, paths, discover=False)
    app = MuxtuiApp(config, paths, engine=engine)

    async def run_before(pilot: Pilot[int]) -> None:
        app = await started(pilot)
        await wait_until(pilot, lambda: not chat_pane(app).discovering, "discovery to end")
        await steady(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def models_config(base_url: str) -> str:
    """Two remote models and two local servers (never started)."""
    return provider_config(
        base_url,
        models=("fake", "llama-3.1-8b"),
        extra=local_entry("qwen3-30b") + local_entry("gemma-tiny", ttl=600),
    )


async def models_setup(pilot: Pilot[int]) -> None:
    """Show the Models pane with a local server selected."""
    await started(pilot)
    await pilot.press("f3")
    await pilot.pause()
    await pilot.press("down", "down")
    await steady(pilot)


@pytest.mark.parametrize("size", [SIZE, NARROW], ids=["120x40", "80x24"])
def test_models_pane_snapshot(
    size: tuple[int, int],
    snap_compare: SnapCompare,
    fake_server: FakeOpenAIServer,
    isolated_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    without_local_extra(monkeypatch)  # the rows are exactly what the config names
    app = app_at_default_path(isolated_home, models_config(fake_server.base_url))
    assert snap_compare(app, terminal_size=size, run_before=models_setup)


def test_chat_pane_narrow_snapshot(
    snap_compare: SnapCompare, fake_server: FakeOpenAIServer, isolated_home: Path
) -> None:
    app = app_at_default_path(isolated_home, provider_config(fake_server.base_url))
    assert snap_compare(app, terminal_size=NARROW, run_before=chat_setup("muxtui-dark"))


def test_new_chat_guide_narrow_snapshot(
    snap_compare: SnapCompare, fake_server: FakeOpenAIServer, isolated_home: Path
) -> None:
    app = app_at_default_path(isolated_home, provider_config(fake_server.base_url))

    async def run_before(pilot: Pilot[int]) -> None:
        await started(pilot)
        await steady(pilot)

    assert snap_compare(app, terminal_size=NARROW, run_before=run_before)
