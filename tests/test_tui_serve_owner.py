"""Pilot test: with a `muxtui serve` running, the Models pane shows serve's servers, and its
keys act on them there (nothing starts in the app's process)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from muxtui.engine.paths import Paths
from muxtui.tui.panes.models.model_table import ModelTable
from tests.serve_process import own_model_servers, running_serve
from tests.test_tui_models import cell
from tests.test_tui_support import local_entry, make_app, started, wait_until, without_local_extra

WriteConfig = Callable[[str], Path]


async def test_models_pane_shows_and_drives_serves_servers(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_local_extra(monkeypatch)
    config_file = write_config(
        "[network]\ndiscovery = false\nretries = 0\n\n" + local_entry("tiny")
    )
    with running_serve(config_file, Paths.default(config_file)) as serve:
        loaded = httpx.post(f"{serve.url}/muxtui/v1/models/tiny/load", timeout=30, trust_env=False)
        assert loaded.status_code == 200
        (server,) = serve.local_servers()
        app = make_app(config_file)
        async with app.run_test(size=(140, 40)) as pilot:
            await started(pilot)
            await pilot.press("f3")
            table = app.query_one(ModelTable)
            await wait_until(
                pilot, lambda: cell(table, "tiny", "state").endswith("warm"), "serve's warm row", 20
            )
            assert cell(table, "tiny", "pid") == str(server.pid)
            said = f"using muxtui serve (pid {serve.pid}, {serve.url}) for local models"
            assert any(said in n.message for n in app._notifications)
            assert cell(table, "tiny", "where") == "local"
            table.move_cursor(row=0)
            await pilot.pause()
            detail = str(app.screen.query_one("#model-detail").render())
            assert f"served by muxtui serve (pid {serve.pid}, {serve.url})" in detail

            await pilot.press("u")  # unload goes to serve
            await wait_until(pilot, lambda: not serve.local_servers(), "serve's unload", 20)
            await wait_until(
                pilot, lambda: cell(table, "tiny", "state").endswith("cold"), "the cold row", 20
            )
            await pilot.press("p")  # preload goes to serve too
            await wait_until(pilot, lambda: len(serve.local_servers()) == 1, "serve's load", 20)
            await wait_until(
                pilot, lambda: cell(table, "tiny", "state").endswith("warm"), "warm again", 20
            )
            assert not own_model_servers(serve)

            serve.stop()  # gone: the app says so, and its rows are its own again
            await wait_until(
                pilot,
                lambda: any(
                    "stopped; starting local servers here" in n.message for n in app._notifications
                ),
                "the notice that serve stopped",
                20,
            )
            await wait_until(
                pilot, lambda: cell(table, "tiny", "state").endswith("cold"), "its own row", 20
            )
            assert cell(table, "tiny", "pid") == "–"
