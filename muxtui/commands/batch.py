"""`muxtui batch`: a file of prompts or requests through a model, with progress on stderr.

The progress bar is `rich.progress`: rich comes with Textual already (no new dependency), is
well kept, writes to stderr and renders once, at the end, when stderr is not a terminal.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from muxtui.cli import Context
    from muxtui.engine.batch.runner import BatchSpec, BatchSummary
    from muxtui.engine.events import BatchProgress


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `batch`."""
    parser = subparsers.add_parser(
        "batch",
        help="run a file of prompts or requests through a model",
        description=(
            "Send every line of INPUT to a model: OpenAI Batch JSONL (custom_id, method, url, "
            "body), JSONL with prompt or messages, CSV with --template, or plain text (one "
            "prompt a line). Results are appended to OUTPUT in the OpenAI Batch output shape as "
            "each finishes; failures go to the .errors.jsonl file beside it. Run it again with "
            "the same OUTPUT to resume: finished items are skipped, failed and changed ones are "
            "sent again. Exit status: 0 all done, 1 some failed, 2 bad input."
        ),
    )
    parser.add_argument("input", metavar="INPUT", help="the file of prompts or requests")
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUTPUT",
        help="the result file (default: INPUT's name with .results.jsonl)",
    )
    parser.add_argument(
        "--model",
        "-m",
        metavar="M",
        help="send every item to this model (default: each line's model, else the last used)",
    )
    parser.add_argument(
        "--concurrency",
        "-c",
        type=int,
        metavar="N",
        help="requests at once per model (default: the server's parallel slots, else the "
        "config's [network] max_connections)",
    )
    parser.add_argument(
        "--template",
        "-t",
        metavar="T",
        help="build each prompt from the line's fields or CSV columns, e.g. 'Summarise: {text}' "
        "({text} is the line of a text input)",
    )
    parser.add_argument("--ordered", action="store_true", help="write the records in input order")


def run(args: argparse.Namespace, context: Context) -> int:
    """Run the batch; the exit status says whether every item succeeded."""
    import asyncio

    from muxtui.engine.batch.runner import BatchSpec
    from muxtui.engine.errors import UsageError

    if args.concurrency is not None and args.concurrency < 1:
        raise UsageError(f"batch: --concurrency must be 1 or more, not {args.concurrency}")
    spec = BatchSpec(
        input=Path(args.input),
        output=Path(args.output) if args.output else None,
        model=args.model,
        template=args.template,
        concurrency=args.concurrency,
        ordered=args.ordered,
    )
    bar = _Bar()
    try:
        summary = asyncio.run(_batch(context, spec, bar))
    except KeyboardInterrupt:
        bar.stop()
        latest = bar.latest
        done = f" with {latest.done} of {latest.total} done" if latest is not None else ""
        print(f"muxtui: batch cancelled{done}; run the same command to resume", file=sys.stderr)
        return 130
    finally:
        bar.stop()
    for note in summary.notes:
        print(f"muxtui: {note}", file=sys.stderr)
    print(_summary_line(summary), file=sys.stderr)
    return summary.exit_status


async def _batch(context: Context, spec: BatchSpec, bar: _Bar) -> BatchSummary:
    from muxtui.engine.core import Engine

    async with Engine(context.config, context.paths) as engine:
        return await engine.run_batch(spec, on_progress=bar.show)


class _Bar:
    """The progress bar on stderr: done/total, items/s, tokens/s and the engine's ETA."""

    def __init__(self) -> None:
        self.latest: BatchProgress | None = None
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def show(self, progress: BatchProgress) -> None:
        """Draw one progress event (started on the first one that has a total)."""
        self.latest = progress
        if progress.total == 0:
            return
        if self._progress is None:
            self._start()
        assert self._progress is not None and self._task is not None
        eta = "–" if progress.eta_s is None else _duration(progress.eta_s)
        self._progress.update(
            self._task,
            total=progress.total,
            completed=progress.done,
            rates=(
                f"{progress.requests_per_s:6.1f} items/s {progress.tokens_per_s:7.1f} tok/s "
                f"ETA {eta}"
            ),
            counts=f"{progress.done}/{progress.total}"
            + (f" ({progress.failed} failed)" if progress.failed else ""),
        )

    def _start(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        self._progress = Progress(
            TextColumn("batch"),
            BarColumn(),
            TextColumn("{task.fields[counts]}"),
            TextColumn("{task.fields[rates]}"),
            console=Console(stderr=True),
            refresh_per_second=4,
        )
        self._task = self._progress.add_task("batch", counts="", rates="")
        self._progress.start()

    def stop(self) -> None:
        """Leave the last drawn bar on screen."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _summary_line(summary: BatchSummary) -> str:
    progress = summary.progress
    failed = f", {progress.failed} failed (see {summary.errors})" if progress.failed else ""
    skipped = f", {progress.skipped} already done" if progress.skipped else ""
    return (
        f"muxtui: batch {progress.state}: {progress.succeeded} ok{failed}{skipped} "
        f"in {_duration(progress.elapsed_s)} → {summary.output}"
    )


def _duration(value: float) -> str:
    if value < 60:
        return f"{max(0.0, value):.1f} s"
    minutes, seconds = divmod(int(value + 0.5), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
