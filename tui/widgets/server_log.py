"""A live tail of one local server's log file, read in a thread."""

from __future__ import annotations

import threading
from pathlib import Path

from textual import on, work
from textual.message import Message
from textual.widgets import Log
from textual.worker import get_current_worker

# How much of an existing log is shown when following starts, and how often the file is read.
TAIL_BYTES = 16_384
READ_EVERY_S = 0.25


class ServerLog(Log):
    """Shows the end of a log file and follows what is appended to it."""

    class LinesRead(Message):
        """New complete lines were read from the followed file."""

        def __init__(self, generation: int, lines: list[str]) -> None:
            super().__init__()
            self.generation = generation
            self.lines = lines

    def __init__(self, *, id: str | None = None, max_lines: int = 500) -> None:
        super().__init__(id=id, max_lines=max_lines, auto_scroll=True)
        self.path: Path | None = None
        self._generation = 0
        self._stop = threading.Event()
        self._placeholder_shown = False

    def follow(self, path: Path | None, placeholder: str = "") -> None:
        """Show the tail of `path` and keep following it; `placeholder` shows until it has text."""
        if path == self.path and path is not None:
            return
        self._stop.set()
        self._stop = threading.Event()
        self._generation += 1
        self.path = path
        self.clear()
        self._placeholder_shown = bool(placeholder)
        if placeholder:
            self.write_line(placeholder)
        if path is not None:
            self._tail(path, self._generation, self._stop)

    @work(thread=True, exclusive=True, group="log-tail", exit_on_error=False)
    def _tail(self, path: Path, generation: int, stop: threading.Event) -> None:
        """Read the file's last lines, then new ones as they are written, until stopped."""
        worker = get_current_worker()
        position: int | None = None
        partial = ""
        while not worker.is_cancelled and not stop.is_set():
            try:
                size = path.stat().st_size
            except OSError:
                stop.wait(READ_EVERY_S)
                continue
            if position is None or size < position:  # first read, or the file was truncated
                start = max(0, size - TAIL_BYTES)
                skip_first = start > 0
                position, partial = start, ""
            else:
                skip_first = False
            if size > position:
                with path.open("rb") as handle:
                    handle.seek(position)
                    chunk = handle.read(size - position)
                position += len(chunk)
                text = partial + chunk.decode("utf-8", errors="replace")
                lines = text.split("\n")
                partial = lines.pop()
                if skip_first and lines:
                    lines = lines[1:]
                if lines:
                    self.post_message(
                        self.LinesRead(generation, [line.rstrip("\r") for line in lines])
                    )
            stop.wait(READ_EVERY_S)

    @on(LinesRead)
    def _lines_read(self, event: LinesRead) -> None:
        if event.generation == self._generation:
            first = self._placeholder_shown
            if first:
                self._placeholder_shown = False
                self.clear()
            self.write_lines(event.lines, scroll_end=True if first else None)

    def on_show(self) -> None:
        """Show the newest lines when the pane comes into view (it may have filled while hidden)."""
        self.call_after_refresh(self.scroll_end, animate=False)

    def on_unmount(self) -> None:
        """Stop the reading thread."""
        self._stop.set()
