"""Pilot tests of the Batch pane, hosted in a tiny app around a real engine and loopback server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widgets import Button, DataTable, Input, Select, Static

from muxtui.engine.batch.output import OutputPaths
from muxtui.engine.config import Config
from muxtui.engine.core import Engine
from muxtui.engine.events import BatchState
from muxtui.engine.retry import RetryPolicy
from muxtui.tui.panes.batch.pane import BatchPane
from muxtui.tui.panes.batch.result import ResultScreen
from tests.batch_support import FAST, assert_each_once, batch_config, prompts, write_jsonl
from tests.fake_server import FakeOpenAIServer
from tests.test_tui_support import wait_until

Engines = Callable[[Config, RetryPolicy], Engine]


class Host(App[int]):
    """Just the pane."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine

    def compose(self) -> ComposeResult:
        yield BatchPane(self.engine)


def pane_of(pilot: Pilot[int]) -> BatchPane:
    return pilot.app.query_one(BatchPane)


async def fill_and_start(pilot: Pilot[int], source: Path, concurrency: str) -> None:
    app = pilot.app
    app.query_one("#batch-input", Input).value = str(source)
    app.query_one("#batch-model", Select).value = "m"
    app.query_one("#batch-concurrency", Input).value = concurrency
    await pilot.click("#batch-start")
    await pilot.pause()


def state(pilot: Pilot[int]) -> BatchState | None:
    progress = pane_of(pilot).progress
    return progress.state if progress is not None else None


async def test_the_pane_runs_a_small_batch_to_the_end_and_opens_a_result(
    fake_server: FakeOpenAIServer, engines: Engines, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(12))
    engine = engines(batch_config(fake_server.base_url), FAST)
    app = Host(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await fill_and_start(pilot, source, "4")
        await wait_until(pilot, lambda: state(pilot) is BatchState.FINISHED, "the batch to end")
        await pilot.pause()
        counters = str(app.query_one("#batch-counters", Static).render())
        assert "done 12/12" in counters and "ok 12" in counters and "failed 0" in counters
        table = app.query_one("#batch-items", DataTable)
        assert table.row_count == 12
        assert app.query_one("#batch-start", Button).disabled is False
        assert app.query_one("#batch-cancel", Button).disabled is True
        table.focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ResultScreen), "the result view")
        screen = app.screen
        assert isinstance(screen, ResultScreen)
        assert screen.record["custom_id"] == str(table.get_row_at(table.cursor_row)[0])
        assert "tok tok" in str(screen.query_one("#result-text", Static).render())
        await pilot.press("escape")
    assert_each_once({f"r{n}" for n in range(12)}, tmp_path / "in.results.jsonl")


async def test_cancel_then_resume_finishes_with_no_duplicates(
    fake_server: FakeOpenAIServer, engines: Engines, tmp_path: Path
) -> None:
    fake_server.behaviour.first_byte_delay = 0.03
    source = write_jsonl(tmp_path / "in.jsonl", prompts(120))
    paths = OutputPaths.beside(tmp_path / "in.results.jsonl")
    engine = engines(batch_config(fake_server.base_url), FAST)
    app = Host(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await fill_and_start(pilot, source, "2")
        pane = pane_of(pilot)
        await wait_until(
            pilot, lambda: pane.progress is not None and pane.progress.done >= 6, "some items"
        )
        await pilot.click("#batch-cancel")
        await wait_until(pilot, lambda: state(pilot) is BatchState.CANCELLED, "the cancel")
        assert "run it again with the same output to resume" in str(
            app.query_one("#batch-message", Static).render()
        )
        done_before = paths.results.read_bytes().count(b"\n")
        assert 6 <= done_before < 120
        assert app.query_one("#batch-resume", Button).disabled is False
        fake_server.reset_counters()
        fake_server.behaviour.first_byte_delay = 0.0
        await pilot.click("#batch-resume")
        await wait_until(pilot, lambda: state(pilot) is BatchState.FINISHED, "the resumed run", 30)
        assert pane.progress is not None and pane.progress.skipped == done_before
    assert fake_server.chat_requests == 120 - done_before
    assert_each_once({f"r{n}" for n in range(120)}, paths.results, paths.errors)
