"""The Batch pane: choose an input, model, template and concurrency; start, cancel, resume; watch.

The run lives in the engine (`Engine.start_batch`), not in this widget: it keeps going while
another pane is shown, and a pane mounted later picks up the latest run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Button, DataTable, Input, Label, ProgressBar, Select, Static

from muxtui.engine.events import BatchItem, BatchProgress, BatchState
from muxtui.tui.panes.batch.result import ResultScreen

if TYPE_CHECKING:
    from muxtui.engine.batch.jobs import BatchJob
    from muxtui.engine.batch.runner import BatchSpec
    from muxtui.engine.core import Engine

COLUMNS = ("Item", "Line", "Status", "Latency", "Tokens", "Reply or error")
ENDED = (BatchState.FINISHED, BatchState.CANCELLED, BatchState.FAILED)


def format_eta(seconds: float | None) -> str:
    """Seconds as m:ss (h:mm:ss past an hour), or a dash when unknown."""
    if seconds is None:
        return "–"
    whole = max(0, int(seconds + 0.5))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def counters_line(progress: BatchProgress) -> str:
    """The counters and rates of a run, one line."""
    return (
        f"done {progress.done}/{progress.total} · ok {progress.succeeded} · "
        f"skipped {progress.skipped} · failed {progress.failed} · in flight {progress.in_flight} "
        f"· {progress.requests_per_s:.1f} items/s · {progress.tokens_per_s:.0f} tok/s · "
        f"ETA {format_eta(progress.eta_s)}"
    )


class BatchPane(Widget):
    """Start a batch on the engine and follow it; open any finished item's record."""

    DEFAULT_CSS = """
    BatchPane { layout: vertical; height: 1fr; padding: 0 1; }
    BatchPane .batch-row { height: auto; margin-bottom: 1; }
    BatchPane .batch-row Label { width: 13; padding: 1 1 0 0; }
    BatchPane #batch-input, BatchPane #batch-template { width: 1fr; }
    BatchPane #batch-model { width: 1fr; }
    BatchPane #batch-concurrency { width: 12; }
    BatchPane .batch-row Button { margin-right: 1; }
    BatchPane #batch-bar { margin-bottom: 1; }
    BatchPane #batch-message { color: $text-muted; }
    BatchPane #batch-items { height: 1fr; }
    """

    progress: reactive[BatchProgress | None] = reactive(None, always_update=True)

    def __init__(self, engine: Engine, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.engine = engine
        self.job: BatchJob | None = None

    def compose(self) -> ComposeResult:
        """The form, the buttons, the counters and the latest items."""
        with Horizontal(classes="batch-row"):
            yield Label("Input")
            yield Input(placeholder="prompts.jsonl, .csv or .txt", id="batch-input")
        with Horizontal(classes="batch-row"):
            yield Label("Model")
            yield Select[str](
                self._model_options(),
                prompt="each line's model, else the last used",
                id="batch-model",
            )
            yield Label("Concurrency")
            yield Input(placeholder="auto", type="integer", id="batch-concurrency")
        with Horizontal(classes="batch-row"):
            yield Label("Template")
            yield Input(placeholder="optional, e.g. Summarise: {text}", id="batch-template")
        with Horizontal(classes="batch-row"):
            yield Button("Start", id="batch-start", variant="primary")
            yield Button("Cancel", id="batch-cancel", variant="error", disabled=True)
            yield Button("Resume", id="batch-resume", disabled=True)
            yield Button("Open result", id="batch-open", disabled=True)
        yield ProgressBar(total=None, show_eta=False, id="batch-bar")
        yield Static("No batch has run yet.", id="batch-counters", markup=False)
        yield Static("", id="batch-message", markup=False)
        table: DataTable[str | Text] = DataTable(id="batch-items", cursor_type="row")
        table.add_columns(*COLUMNS)
        yield table

    def on_mount(self) -> None:
        """Pick up the engine's latest run, if any (the pane may be newer than the run)."""
        latest = self.engine.batches.latest
        if latest is not None:
            self._follow(latest)

    def on_show(self) -> None:
        """Offer the models known now (discovery may have found more since)."""
        select: Select[str] = self.query_one("#batch-model", Select)
        chosen = select.value
        options = self._model_options()
        select.set_options(options)
        if isinstance(chosen, str) and any(value == chosen for _, value in options):
            select.value = chosen

    def _model_options(self) -> list[tuple[str, str]]:
        return [(entry.name, entry.name) for entry in self.engine.list_models()]

    # --- actions -------------------------------------------------------------------------------

    def action_start_batch(self) -> None:
        """The palette's "Start batch": the form's settings, or where to fill them in."""
        self.start()

    def action_cancel_batch(self) -> None:
        """The palette's "Cancel batch"."""
        if self.job is None or not self.job.running:
            self.notify("no batch is running", severity="warning")
        self.cancel()

    def action_resume_batch(self) -> None:
        """The palette's "Resume batch"."""
        if self.job is None or self.job.running:
            self.notify("nothing to resume: no batch has stopped", severity="warning")
        self.resume()

    @on(Button.Pressed, "#batch-start")
    def start(self) -> None:
        """Start a batch with the form's settings (a finished output resumes, never repeats)."""
        spec = self._spec_from_form()
        if spec is not None:
            self._follow(self.engine.start_batch(spec))

    @on(Button.Pressed, "#batch-cancel")
    def cancel(self) -> None:
        """Stop the running batch cleanly; Resume finishes it later."""
        if self.job is not None:
            self.job.cancel()

    @on(Button.Pressed, "#batch-resume")
    def resume(self) -> None:
        """Run the last batch again with the same settings: only what is missing is sent."""
        if self.job is not None and not self.job.running:
            self._follow(self.engine.start_batch(self.job.spec))

    @on(Button.Pressed, "#batch-open")
    @on(DataTable.RowSelected, "#batch-items")
    def open_result(self) -> None:
        """Show the record written for the selected item."""
        table = self.query_one("#batch-items", DataTable)
        if self.job is None or not table.row_count:
            return
        custom_id = str(table.get_row_at(table.cursor_row)[0])
        job = self.job

        async def show() -> None:
            record = await job.record(custom_id)
            if record is None:
                self.notify(f"no record for {custom_id} yet", severity="warning")
            else:
                self.app.push_screen(ResultScreen(custom_id, record))

        self.run_worker(show(), group="batch-open", exit_on_error=False)

    def _spec_from_form(self) -> BatchSpec | None:
        from muxtui.engine.batch.runner import BatchSpec  # the engine's batch code, when used

        source = self.query_one("#batch-input", Input).value.strip()
        if not source:
            self.notify("give the input file first", severity="warning")
            return None
        model = self.query_one("#batch-model", Select).value
        concurrency = self.query_one("#batch-concurrency", Input).value.strip()
        template = self.query_one("#batch-template", Input).value
        if concurrency and int(concurrency) < 1:
            self.notify("concurrency must be 1 or more", severity="warning")
            return None
        return BatchSpec(
            input=Path(source),
            model=model if isinstance(model, str) else None,
            template=template or None,
            concurrency=int(concurrency) if concurrency else None,
        )

    # --- following a run -----------------------------------------------------------------------

    def _follow(self, job: BatchJob) -> None:
        self.job = job
        self.query_one("#batch-items", DataTable).clear()
        self.run_worker(self._watch(job), group="batch-follow", exclusive=True, exit_on_error=False)

    async def _watch(self, job: BatchJob) -> None:
        async for progress in job.updates():
            self.progress = progress
        await job.wait()
        self.progress = job.progress
        if job.error:
            self.notify(job.error, title="batch", severity="error", timeout=15)

    def watch_progress(self, progress: BatchProgress | None) -> None:
        """Show a new progress: bar, counters, message, buttons and the latest items."""
        if progress is None:
            return
        running = progress.state not in ENDED
        bar = self.query_one("#batch-bar", ProgressBar)
        bar.update(total=progress.total or None, progress=progress.done)
        self.query_one("#batch-counters", Static).update(counters_line(progress))
        self.query_one("#batch-message", Static).update(progress.message)
        self.query_one("#batch-start", Button).disabled = running
        self.query_one("#batch-cancel", Button).disabled = not running
        resumable = progress.state in (BatchState.CANCELLED, BatchState.FAILED)
        self.query_one("#batch-resume", Button).disabled = running or not resumable
        self.query_one("#batch-open", Button).disabled = not progress.recent
        self._show_items(progress.recent)

    def _show_items(self, items: tuple[BatchItem, ...]) -> None:
        table: DataTable[str | Text] = self.query_one("#batch-items", DataTable)
        wanted = [item.custom_id for item in reversed(items)]  # newest first
        shown = [str(key.value) for key in table.rows]
        if shown == wanted:
            return
        cursor = table.cursor_row
        with self.app.batch_update():
            table.clear()
            for item in reversed(items):
                status = Text("ok", style="green") if item.ok else Text("failed", style="red")
                table.add_row(
                    item.custom_id,
                    str(item.line),
                    status,
                    f"{item.latency_s * 1000:.0f} ms" if item.latency_s else "–",
                    str(item.tokens) if item.ok else "–",
                    item.detail,
                    key=item.custom_id,
                )
            if table.row_count:
                table.move_cursor(row=min(cursor, table.row_count - 1))
