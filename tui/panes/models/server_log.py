"""A live tail of one local server's log file, read in a thread, across restarts of the server."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from textual import on, work
from textual.message import Message
from textual.widgets import Log
from textual.worker import get_current_worker

# How much of an existing log is shown when following starts, and how often the file is read.
TAIL_BYTES = 16_384
READ_EVERY_S = 0.25
# Bytes from the start of the file that identify it: a server restart that rewrites the file
# in place is noticed even when the new file has already grown past the old read position.
HEAD_BYTES = 64


class _Followed:
    """Where the reader is in the followed file, and which file (inode and head) that is."""

    def __init__(self) -> None:
        self.identity: tuple[int, int, bytes] | None = None
        self.position = 0
        self.partial = b""

    def read_new(self, path: Path) -> tuple[list[str], bool]:
        """New complete lines since the last call, and whether the file was started again."""
        try:
            with path.open("rb") as handle:
                stat = os.fstat(handle.fileno())
                head = handle.read(HEAD_BYTES)
                identity = (stat.st_dev, stat.st_ino, head)
                first = self.identity is None
                restarted = not first and not self._same_file(identity, stat.st_size)
                if first or restarted:
                    self.position = max(0, stat.st_size - TAIL_BYTES) if first else 0
                    self.partial = b""
                self.identity = identity
                if stat.st_size <= self.position:
                    return [], restarted
                handle.seek(self.position)
                chunk = handle.read(stat.st_size - self.position)
        except OSError:  # not written yet, or replaced between two calls: try again later
            return [], False
        skip_first = first and self.position > 0  # started mid-line in a long existing log
        self.position += len(chunk)
        pieces = (self.partial + chunk).split(b"\n")
        self.partial = pieces.pop()
        if skip_first and pieces:
            pieces = pieces[1:]
        return [piece.decode("utf-8", "replace").rstrip("\r") for piece in pieces], restarted

    def _same_file(self, now: tuple[int, int, bytes], size: int) -> bool:
        """Whether the file is still the one read before: same inode, same head, not shorter."""
        assert self.identity is not None
        dev, ino, head = self.identity
        same_head = now[2][: len(head)] == head
        return (dev, ino) == now[:2] and same_head and size >= self.position


class ServerLog(Log):
    """Shows the end of a log file and follows what is appended, until the person scrolls up."""

    class LinesRead(Message):
        """New complete lines were read from the followed file (`restarted`: a new file)."""

        def __init__(self, generation: int, lines: list[str], restarted: bool) -> None:
            super().__init__()
            self.generation = generation
            self.lines = lines
            self.restarted = restarted

    def __init__(self, *, id: str | None = None, max_lines: int = 500) -> None:
        # Log's own auto-scroll gives up for good once a long line adds a horizontal scrollbar
        # (the view is then one row short of the end); `following` decides instead.
        super().__init__(id=id, max_lines=max_lines, auto_scroll=False)
        self.path: Path | None = None
        self.following = True
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
        self.following = True
        self._placeholder_shown = bool(placeholder)
        if placeholder:
            self.write_line(placeholder)
        if path is not None:
            self._tail(path, self._generation, self._stop)

    @work(thread=True, exclusive=True, group="log-tail", exit_on_error=False)
    def _tail(self, path: Path, generation: int, stop: threading.Event) -> None:
        """Read the file's last lines, then new ones as they are written, until stopped."""
        worker = get_current_worker()
        followed = _Followed()
        while not worker.is_cancelled and not stop.is_set():
            lines, restarted = followed.read_new(path)
            if lines or restarted:
                self.post_message(self.LinesRead(generation, lines, restarted))
            stop.wait(READ_EVERY_S)

    @on(LinesRead)
    def _lines_read(self, event: LinesRead) -> None:
        if event.generation != self._generation:
            return
        if self._placeholder_shown:
            self._placeholder_shown = False
            self.clear()
        if event.restarted:
            self.write_line("─── the log was started again ───")
        self.write_lines(event.lines, scroll_end=False)
        if self.following:
            self.scroll_end(animate=False, x_axis=False)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        """Stop following when the person scrolls up; follow again once back at the end."""
        super().watch_scroll_y(old_value, new_value)
        if new_value >= self.max_scroll_y:
            self.following = True
        elif new_value < old_value:
            self.following = False

    def on_show(self) -> None:
        """Show the newest lines when the pane comes into view (it may have filled while hidden)."""
        if self.following:
            self.call_after_refresh(self.scroll_end, animate=False, x_axis=False)

    def on_unmount(self) -> None:
        """Stop the reading thread."""
        self._stop.set()
