"""The batch's files: OpenAI Batch result and error lines, appended as items finish, and synced.

Durability: every record is one `write(2)` to a file opened with O_APPEND, so a killed process
leaves whole lines (or one torn last line, which the next run cuts off). What a write leaves in
the page cache survives the process but not a power cut; `sync_every_s` says how often the
files are fdatasync'd (0: before each item counts as done, a group commit; None: never). A
result lost to a power cut is simply redone by the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from muxtui.engine.batch.ledger import ledger_line, sync_directory
from muxtui.engine.errors import UsageError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, one run per output by care
    fcntl = None  # type: ignore[assignment]

_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
_datasync = getattr(os, "fdatasync", os.fsync)  # data only where the platform allows it
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass(frozen=True)
class OutputPaths:
    """The result file and the two files beside it."""

    results: Path
    errors: Path
    ledger: Path

    @classmethod
    def beside(cls, output: Path) -> OutputPaths:
        """`out.jsonl` → `out.jsonl`, `out.errors.jsonl`, `out.ledger.jsonl`."""
        stem = output.name.removesuffix(".jsonl")
        return cls(
            output,
            output.with_name(f"{stem}.errors.jsonl"),
            output.with_name(f"{stem}.ledger.jsonl"),
        )


def default_output(source: Path) -> Path:
    """The input's name with `.results.jsonl`: `a.csv` → `a.results.jsonl`."""
    return source.with_name(f"{source.stem}.results.jsonl")


@dataclass(frozen=True, slots=True)
class Record:
    """One line for the result file (with its ledger key) or, with key 0, the error file."""

    custom_id: str
    key: int
    line: bytes


class RecordIds:
    """`batch_req_...` ids: one random token per run and a counter, unique across runs."""

    def __init__(self) -> None:
        self._prefix = f"batch_req_{secrets.token_hex(6)}"
        self._count = 0

    def next(self) -> str:
        """A fresh record id."""
        self._count += 1
        return f"{self._prefix}{self._count:08x}"


def result_line(record_id: str, custom_id: str, status: int, request_id: str, body: bytes) -> bytes:
    """A result record around the reply body exactly as the server sent it (one line of JSON)."""
    return (
        b'{"id":"%s","custom_id":%s,"response":{"status_code":%d,"request_id":%s,"body":%s},'
        b'"error":null}\n'
        % (
            record_id.encode(),
            _dumps(custom_id).encode(),
            status,
            _dumps(request_id).encode(),
            body,
        )
    )


def error_line(record_id: str, custom_id: str, code: str, message: str, line: int) -> bytes:
    """An error record: `response` null, `error` with a code, a one-line message and the line."""
    error = {"code": code, "message": message, "line": line}
    record = {"id": record_id, "custom_id": custom_id, "response": None, "error": error}
    return _dumps(record).encode() + b"\n"


def one_line_body(content: bytes, parsed: object) -> bytes:
    """The reply body as one line: the server's bytes when they already are, else re-encoded."""
    body = content.strip()
    if b"\n" in body or b"\r" in body or not body.startswith(b"{"):
        return _dumps(parsed).encode()
    return body


class OutputFiles:
    """Appends records to the result, error and ledger files, and syncs them as configured."""

    def __init__(self, paths: OutputPaths, sync_every_s: float | None) -> None:
        self.paths = paths
        self.sync_every_s = sync_every_s
        self._fds: dict[Path, int] = {}
        self._written = 0  # records written
        self._synced = 0  # records known durable
        self._sync_round: asyncio.Task[None] | None = None
        self._syncer: asyncio.Task[None] | None = None
        self._new_ledger = False  # created by this run's lock()
        self._opened = False  # open() ran: records may have been written

    def lock(self) -> None:
        """Open the ledger and lock it, so no other run (here or in another process) writes here."""
        self._new_ledger = not self.paths.ledger.exists()
        self._open(self.paths.ledger)
        if fcntl is not None:
            try:
                fcntl.flock(self._fds[self.paths.ledger], fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self.close_files()
                raise UsageError(
                    f"another batch is writing {self.paths.results}; wait for it to end, "
                    "cancel it, or choose another -o"
                ) from None

    def open(self) -> None:
        """Open (creating, mode 0600) the result and error files for appending."""
        created = not self.paths.results.exists()
        self._opened = True
        self._open(self.paths.results)  # the error file is opened by its first record
        if created:
            sync_directory(self.paths.results.parent)
        if self.sync_every_s:
            self._syncer = asyncio.create_task(self._sync_every(self.sync_every_s))

    def _open(self, path: Path) -> None:
        try:
            self._fds[path] = os.open(path, _OPEN_FLAGS, 0o600)
        except OSError as exc:
            self.close_files()
            raise UsageError(_cannot_write(path, exc)) from None

    def add_key(self, custom_id: str, key: int) -> None:
        """Record the key of a result found without one (its ledger line was lost)."""
        self._write(self.paths.ledger, ledger_line(custom_id, key))

    def add(self, record: Record) -> None:
        """Append a record; a result's ledger line goes first, so a result never lacks its key."""
        if record.key:
            self._write(self.paths.ledger, ledger_line(record.custom_id, record.key))
            self._write(self.paths.results, record.line)
        else:
            if self.paths.errors not in self._fds:
                self._open(self.paths.errors)
            self._write(self.paths.errors, record.line)
        self._written += 1

    def _write(self, path: Path, data: bytes) -> None:
        fd = self._fds[path]
        try:
            while data:
                data = data[os.write(fd, data) :]
        except OSError as exc:
            raise UsageError(_cannot_write(path, exc)) from None

    async def durable(self) -> None:
        """Return once every record written so far is on disk (when syncing after each item).

        Records written while a sync runs wait for the next one, so concurrent items share a
        sync (a group commit) instead of paying one each.
        """
        if self.sync_every_s != 0:
            return
        target = self._written
        while self._synced < target:
            if self._sync_round is None or self._sync_round.done():
                self._sync_round = asyncio.create_task(self._sync_once())
            await asyncio.shield(self._sync_round)

    async def _sync_once(self) -> None:
        written = self._written
        await asyncio.to_thread(self._sync_files)
        self._synced = max(self._synced, written)

    async def _sync_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            if self._synced < self._written:
                await self._sync_once()

    def _sync_files(self) -> None:
        for fd in tuple(self._fds.values()):
            with contextlib.suppress(OSError):  # a closed fd at shutdown; the final sync follows
                _datasync(fd)

    async def aclose(self) -> None:
        """Sync (unless told never to) and close the files."""
        for task in (self._syncer, self._sync_round):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._fds and self.sync_every_s is not None:
            await asyncio.shield(asyncio.to_thread(self._sync_files))
        self.close_files()
        if self._new_ledger and not self._opened:  # refused before writing: leave no trace
            with contextlib.suppress(OSError):
                self.paths.ledger.unlink()
        with contextlib.suppress(OSError):  # an error file exists only when there are errors
            if self.paths.errors.stat().st_size == 0:
                self.paths.errors.unlink()

    def close_files(self) -> None:
        """Close the files now, without syncing."""
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)


class InOrder:
    """Hands finished records on in input order, holding at most `window` early ones."""

    def __init__(self, window: int, emit: Callable[[Record], None]) -> None:
        self._window = window
        self._emit = emit
        self._next = 0
        self._held: dict[int, Record] = {}
        self._moved = asyncio.Event()

    async def admit(self, seq: int) -> None:
        """Wait until record `seq` may start without the held records passing `window`."""
        while seq >= self._next + self._window:
            self._moved.clear()
            await self._moved.wait()

    def finish(self, seq: int, record: Record) -> None:
        """Record `seq` is ready; emit it and every held one that now follows in order."""
        if seq != self._next:
            self._held[seq] = record
            return
        self._emit(record)
        self._next += 1
        held = self._held
        while self._next in held:
            self._emit(held.pop(self._next))
            self._next += 1
        self._moved.set()


def _cannot_write(path: Path, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"cannot write {path}: its folder does not exist; create it or choose another -o"
    if isinstance(exc, IsADirectoryError):
        return f"cannot write {path}: it is a directory; choose a file name with -o"
    reason = exc.strerror or str(exc)
    return f"cannot write {path} ({reason}); free some space or choose another -o"
