"""What an earlier run finished, so a rerun with the same output resumes instead of starting over.

The result file is the truth about what finished: a custom_id with a complete line there is
done. The ledger beside it says which request produced that line: a hash of the body as sent
and the resolved model, so a line whose body or model changed since is redone.

Writes are ordered so a crash at any instant leaves a consistent state: the ledger line is
written before the result line (a result never lacks its key after a process crash), each line
is one `write(2)`, and a torn last line (cut by SIGKILL or a full disk) is cut off on resume.
A result whose ledger line was lost (power loss) is kept and adopted under its current key.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from muxtui.engine.config_file import write_private_atomically

_RESULT_PREFIX = b'{"id":"batch_req_'
_CUSTOM_ID = b'"custom_id":'
_READ_BUFFER = 1 << 16


def request_key(identity: str, payload: bytes) -> int:
    """The ledger key of a request: its resolved model and its body (without `model`) as sent."""
    digest = hashlib.blake2b(payload, digest_size=8, person=b"muxtui-batch")
    digest.update(b"\0" + identity.encode())
    return int.from_bytes(digest.digest(), "big") or 1  # 0 means "unknown"


def ledger_line(custom_id: str, key: int) -> bytes:
    """One ledger record."""
    return b'{"custom_id":%s,"key":"%016x"}\n' % (json.dumps(custom_id).encode(), key)


@dataclass
class Resume:
    """What the files of an earlier run hold."""

    done: dict[str, int] = field(default_factory=dict)  # custom_id -> key (0: no ledger line)
    results_size: int = 0  # bytes of complete, valid result lines when nothing is dropped
    torn: bool = False  # the result file ends in a partial line
    dropped: int = 0  # unreadable or repeated result lines, removed by a rewrite
    errors_before: int = 0  # records in the error file; they are all tried again

    @property
    def needs_rewrite(self) -> bool:
        """Whether lines must go from the middle of the result file."""
        return self.dropped > 0


def load(results: Path, errors: Path, ledger: Path) -> Resume:
    """Read the ledger, then the result and error files, cutting a torn ledger tail."""
    keys = _load_ledger(ledger)
    state = Resume()
    done = state.done
    for custom_id, end in _result_ids(results, state):
        if custom_id is None or custom_id in done:
            state.dropped += 1
            continue
        done[custom_id] = keys.get(custom_id, 0)
        state.results_size = end
    keys.clear()
    state.errors_before = _count_lines(errors)
    return state


def _load_ledger(path: Path) -> dict[str, int]:
    keys: dict[str, int] = {}
    good_end = 0
    try:
        handle = path.open("rb", buffering=_READ_BUFFER)
    except FileNotFoundError:
        return keys
    with handle:
        offset = 0
        for raw in handle:
            offset += len(raw)
            if not raw.endswith(b"\n"):
                break
            try:
                record = json.loads(raw)
                keys[record["custom_id"]] = int(record["key"], 16)
            except (ValueError, KeyError, TypeError):
                continue  # a damaged line only costs a redo of its item
            good_end = offset
    if path.stat().st_size > good_end:
        os.truncate(path, good_end)  # later appends must not extend a torn line
    return keys


def _result_ids(path: Path, state: Resume) -> Iterator[tuple[str | None, int]]:
    """Each complete result line's custom_id (None if unreadable) and where the line ends."""
    try:
        handle = path.open("rb", buffering=_READ_BUFFER)
    except FileNotFoundError:
        return
    with handle:
        offset = 0
        for raw in handle:
            offset += len(raw)
            if not raw.endswith(b"\n"):
                state.torn = True
                return
            if raw.strip():
                yield custom_id_of(raw), offset


def custom_id_of(raw: bytes) -> str | None:
    """The custom_id of one output line; fast for the lines muxtui writes, None if unreadable."""
    if raw.startswith(_RESULT_PREFIX) and raw.rstrip().endswith(b"}"):
        start = raw.find(_CUSTOM_ID, len(_RESULT_PREFIX)) + len(_CUSTOM_ID)
        if start > len(_CUSTOM_ID) and raw[start : start + 1] == b'"':
            end = raw.find(b'"', start + 1)
            value = raw[start + 1 : end]
            if end > 0 and b"\\" not in value:  # no escapes: the first quote closes it
                with contextlib.suppress(UnicodeDecodeError):
                    return value.decode("utf-8")
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    custom_id = record.get("custom_id") if isinstance(record, dict) else None
    return custom_id if isinstance(custom_id, str) else None


def find_record(paths: tuple[Path, ...], custom_id: str) -> dict[str, Any] | None:
    """The record for `custom_id` in the first of `paths` that has one (blocking: a scan)."""
    for path in paths:
        try:
            handle = path.open("rb", buffering=_READ_BUFFER)
        except FileNotFoundError:
            continue
        with handle:
            for raw in handle:
                if raw.endswith(b"\n") and custom_id_of(raw) == custom_id:
                    with contextlib.suppress(ValueError):
                        record = json.loads(raw)
                        return record if isinstance(record, dict) else None
    return None


def _count_lines(path: Path) -> int:
    try:
        handle = path.open("rb", buffering=_READ_BUFFER)
    except FileNotFoundError:
        return 0
    with handle:
        return sum(1 for raw in handle if raw.strip())


def rewrite_results(results: Path, drop: set[str]) -> None:
    """Rewrite the result file without `drop`ped ids or unreadable, repeated or torn lines.

    The new file replaces the old atomically (written, synced, renamed, directory synced). The
    ledger is never rewritten: its extra lines are harmless, and it stays the file a run locks.
    """
    kept: set[str] = set()

    def lines() -> Iterator[bytes]:
        with results.open("rb", buffering=_READ_BUFFER) as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    return
                custom_id = custom_id_of(raw)
                if custom_id is None or custom_id in drop or custom_id in kept:
                    continue
                kept.add(custom_id)
                yield raw

    write_private_atomically(results, lines())
    sync_directory(results.parent)  # the rename itself survives a power cut


def truncate(path: Path, size: int) -> None:
    """Cut `path` to `size` bytes (a torn last line, or every record) and sync it."""
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size == size:
            return
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)


def sync_directory(directory: Path) -> None:
    """Make a rename or a new file in `directory` durable (where the platform allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
