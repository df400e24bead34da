"""Pilot tests of the Models pane: rows, preload, unload, pin, and the live server log."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from muxtui.tui.panes.models.model_table import ModelTable
from muxtui.tui.panes.models.server_log import ServerLog
from tests.fake_server import FakeOpenAIServer
from tests.test_tui_support import (
    local_entry,
    make_app,
    provider_config,
    started,
    wait_until,
    without_local_extra,
)

WriteConfig = Callable[[str], Path]


def cell(table: ModelTable, name: str, column: str) -> str:
    """The plain text of one cell."""
    return str(table.get_cell(name, column))


async def test_models_pane_lists_remote_and_local_models(
    fake_server: FakeOpenAIServer, write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_local_extra(monkeypatch)  # the list is exactly what the config names
    config = provider_config(fake_server.base_url, extra=local_entry("tiny"))
    app = make_app(write_config(config))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        await pilot.press("f3")
        await pilot.pause()
        table = app.query_one(ModelTable)
        assert table.has_focus
        names = [str(table.get_row_at(index)[0]) for index in range(table.row_count)]
        assert names == ["fake", "tiny"]
        assert cell(table, "fake", "where") == "fake"
        assert cell(table, "fake", "state").endswith("remote")
        assert cell(table, "tiny", "where") == "local"
        assert cell(table, "tiny", "state").endswith("cold")
        assert cell(table, "tiny", "pid") == "–"


async def test_models_pane_preload_pin_unload_and_log_tail(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    config = provider_config(fake_server.base_url, extra=local_entry("tiny"))
    app = make_app(write_config(config))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        await pilot.press("f3")
        table = app.query_one(ModelTable)
        table.move_cursor(row=1)
        await pilot.pause()
        assert table.selected_name == "tiny"

        await pilot.press("p")
        await wait_until(
            pilot, lambda: cell(table, "tiny", "state").endswith("warm"), "a warm server", 30
        )
        pid = int(cell(table, "tiny", "pid"))
        assert psutil.pid_exists(pid)
        assert cell(table, "tiny", "port").isdigit()
        assert cell(table, "tiny", "load").endswith(" s")

        log = app.query_one(ServerLog)
        await wait_until(
            pilot, lambda: any("listening" in line for line in log.lines), "the server's log"
        )

        await pilot.press("t")
        await wait_until(pilot, lambda: cell(table, "tiny", "pin") == "pinned", "the pin")
        await pilot.press("t")
        await wait_until(pilot, lambda: cell(table, "tiny", "pin") == "", "the unpin")

        await pilot.press("u")
        await wait_until(
            pilot, lambda: cell(table, "tiny", "state").endswith("cold"), "the unload", 30
        )
        assert cell(table, "tiny", "pid") == "–"
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"


async def test_models_pane_updates_only_changed_cells(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    config = provider_config(fake_server.base_url, models=("a", "b"), extra=local_entry("tiny"))
    app = make_app(write_config(config))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        assert not app.query(ModelTable)  # mounted on first show only
        await pilot.press("f3")
        await pilot.pause()
        table = app.query_one(ModelTable)
        entries = app.engine.list_models()
        assert table.show_entries(entries) == 0
        changed = [entries[0], entries[1].__class__(**{**vars(entries[1]), "hits": 3})]
        changed += entries[2:]
        assert table.show_entries(changed) == 0  # hits are not shown for remote models
        local = entries[2]
        busier = local.__class__(**{**vars(local), "in_flight": 2, "hits": 5})
        assert table.show_entries([*entries[:2], busier]) == 2
        assert table.show_entries(entries[:2]) == 0 and table.row_count == 2


async def test_rescan_finds_a_gguf_dropped_in_after_start(
    fake_server: FakeOpenAIServer, write_config: WriteConfig, isolated_home: Path
) -> None:
    app = make_app(write_config(provider_config(fake_server.base_url)))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        await pilot.press("f3")
        await pilot.pause()
        table = app.query_one(ModelTable)
        assert "just-downloaded" not in rows(table)
        models_dir = isolated_home / "models"
        models_dir.mkdir()
        (models_dir / "just-downloaded.gguf").write_bytes(b"GGUF" + bytes(60))
        await pilot.press("r")
        await wait_until(pilot, lambda: "just-downloaded" in rows(table), "the new GGUF row")
        assert cell(table, "just-downloaded", "state").endswith("cold")
        said = [n.message for n in app._notifications]
        assert said[0].startswith("Rescanning")
        await wait_until(pilot, lambda: any(m.startswith("Found ") for m in said_now(app)), "N")
        found = next(m for m in said_now(app) if m.startswith("Found "))
        assert found.endswith("(1 new)") and f"Found {table.row_count} models" in found


def said_now(app: object) -> list[str]:
    """The notifications shown so far."""
    return [n.message for n in app._notifications]  # type: ignore[attr-defined]


def rows(table: ModelTable) -> list[str]:
    return [str(table.get_row_at(index)[0]) for index in range(table.row_count)]


async def test_log_tail_follows_a_growing_file_and_restarts_of_the_server(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    config = provider_config(fake_server.base_url, extra=local_entry("tiny"))
    app = make_app(write_config(config))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        await pilot.press("f3")
        await pilot.pause()
        table = app.query_one(ModelTable)
        table.move_cursor(row=1)
        await pilot.pause()
        assert table.selected_name == "tiny"
        log = app.query_one(ServerLog)
        path = app.engine.server_log_path("tiny")
        assert log.path == path
        path.parent.mkdir(parents=True, exist_ok=True)

        def shows_last(line: str) -> bool:
            return bool(log.lines) and log.lines[-1] == line and log.is_vertical_scroll_end

        # A long first line (it brings a horizontal scrollbar), then a load in bursts.
        with path.open("a", encoding="utf-8") as handle:
            handle.write("=== muxtui 2026-01-01T00:00:00: llama-server " + "-x " * 80 + "\n")
        for percent in range(0, 101, 5):
            with path.open("a", encoding="utf-8") as handle:
                handle.write(f"loading model ... {percent}%\n")
            await wait_until(pilot, lambda p=percent: shows_last(f"loading model ... {p}%"), "%")
        with path.open("a", encoding="utf-8") as handle:
            handle.write("AMX is not ready to be used!\nserver listening on port 1234\n")
        await wait_until(pilot, lambda: shows_last("server listening on port 1234"), "listening")
        assert "loading model ... 45%" in log.lines

        # Scrolled up, the view stays where the person put it; back at the end, it follows.
        log.scroll_home(animate=False)
        await pilot.pause()
        with path.open("a", encoding="utf-8") as handle:
            handle.write("slot released\n")
        await wait_until(pilot, lambda: log.lines[-1] == "slot released", "a line while up")
        await pilot.pause(2 * 0.25)
        assert log.scroll_y == 0 and not log.following
        log.scroll_end(animate=False)
        await pilot.pause()
        with path.open("a", encoding="utf-8") as handle:
            handle.write("next request\n")
        await wait_until(pilot, lambda: shows_last("next request"), "following again")

        # The server starts again and its log file is rewritten from the start.
        path.write_text("=== muxtui 2026-01-01T00:01:00: again\nloading model ... 7%\n")
        await wait_until(pilot, lambda: shows_last("loading model ... 7%"), "the new file")
        assert "─── the log was started again ───" in log.lines

        # Rewritten again and already longer than before by the next read: still noticed.
        longer = "".join(f"restart line {index}\n" for index in range(400))
        path.write_text("=== muxtui 2026-01-01T00:02:00: third\n" + longer)
        await wait_until(pilot, lambda: shows_last("restart line 399"), "the third file")
        assert log.lines.count("─── the log was started again ───") == 2
        assert "restart line 0" in log.lines

        # Rotated away (a new file under the same name), as the engine does with large logs.
        path.rename(path.with_name(path.name + ".1"))
        path.write_text("=== muxtui 2026-01-01T00:03:00: rotated\nfresh start\n")
        await wait_until(pilot, lambda: shows_last("fresh start"), "the rotated file")


async def test_panes_use_the_data_events_carry(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    from muxtui.engine.events import ModelsChanged, ServerState, ServerStateChanged
    from muxtui.tui.bridge import EventReceived
    from tests.test_tui_support import chat_pane

    config = provider_config(fake_server.base_url, extra=local_entry("tiny"))
    app = make_app(write_config(config))
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        await pilot.press("f3")
        await pilot.pause()
        table = app.query_one(ModelTable)
        table.move_cursor(row=1)
        await pilot.press("f2")  # hidden, the Models pane reads no list of its own
        await pilot.pause()
        assert cell(table, "tiny", "state").endswith("cold")

        # The engine still has `tiny` cold: what the panes show can only come from the events.
        starting = ServerStateChanged("tiny", ServerState.STARTING, ServerState.COLD, "port 1")
        app.post_message(EventReceived(starting))
        await wait_until(pilot, lambda: cell(table, "tiny", "state").endswith("starting"), "row")
        assert str(app.query_one("#model-detail").render()) == "port 1"

        app.post_message(EventReceived(ModelsChanged(("fake", "tiny", "only-in-the-event"))))
        pane = chat_pane(app)
        await wait_until(
            pilot, lambda: "only-in-the-event" in app.query_one("#chat-toolbar").names, "names"
        )
        assert pane.current_model == "fake"


async def test_a_pane_shown_without_an_engine_says_why(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    app = make_app(write_config(provider_config(fake_server.base_url)))
    app.paths.history_db.mkdir(parents=True)  # a folder where the history file should be
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: bool(app.engine_error), "the engine error")
        await pilot.press("f3")
        await pilot.pause()
        assert app.active_pane == "models" and app.pane("models") is None
        placeholder = str(app.query_one("#models .pane-placeholder").render())
        assert placeholder.startswith("muxtui could not start its engine:")
        assert "move it aside" in placeholder
