"""Pilot tests of the Models pane: rows, preload, unload, pin, and the live server log."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psutil

from muxtui.tui.widgets.model_table import COLUMNS, ModelTable
from muxtui.tui.widgets.server_log import ServerLog
from tests.fake_server import FakeOpenAIServer
from tests.test_tui_support import local_entry, make_app, provider_config, started, wait_until

WriteConfig = Callable[[str], Path]
COLUMN_INDEX = {key: index for index, (key, _) in enumerate(COLUMNS)}


def cell(table: ModelTable, name: str, column: str) -> str:
    """The plain text of one cell."""
    return str(table.get_row(name)[COLUMN_INDEX[column]])


async def test_models_pane_lists_remote_and_local_models(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
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


def rows(table: ModelTable) -> list[str]:
    return [str(table.get_row_at(index)[0]) for index in range(table.row_count)]
