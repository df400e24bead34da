"""Runtimes this machine's CPU cannot run, remembered across runs.

A server binary built for instructions the CPU lacks dies with SIGILL. Starting it again
would only fail again, so its identity (real path, size, modification time) is written to a
small JSON file in the data dir; a replaced or rebuilt binary no longer matches and is tried
again. Blocking file I/O: call these in a thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from muxtui.engine.config_file import write_private_atomically

log = logging.getLogger(__name__)

FILE_NAME = "incompatible-runtimes.json"
_VERSION = 1


def killed_by_sigill(returncode: int | None) -> bool:
    """Whether a server's exit status says an illegal instruction killed it.

    128 + SIGILL is how a shell wrapper reports a child that died of it.
    """
    return returncode in (-signal.SIGILL, 128 + signal.SIGILL)


def sigill_reason(name: str, binary: str) -> str:
    """The one-line cause and fix for model `name` whose runtime `binary` hit SIGILL."""
    return (
        "the runtime was built for instructions this CPU lacks (killed by SIGILL); "
        f"set [local.{name}] cmd to a llama-server built for this machine (runtime: {binary})"
    )


def _identity(binary: str) -> tuple[str, dict[str, int]] | None:
    """The binary's real path and the size/mtime that tell a replaced file apart."""
    try:
        real = os.path.realpath(binary)
        stat = os.stat(real)
    except OSError:
        return None
    return real, {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class IncompatibleRuntimes:
    """The record of runtime binaries that died with SIGILL on this machine."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FILE_NAME

    def is_incompatible(self, binary: str) -> bool:
        """Whether `binary`, as it is on disk now, was recorded as dying with SIGILL here."""
        if not binary:
            return False
        found = _identity(binary)
        if found is None:
            return False
        real, fingerprint = found
        entry = self._read().get(real)
        return isinstance(entry, dict) and all(entry.get(k) == v for k, v in fingerprint.items())

    def record(self, binary: str) -> None:
        """Remember `binary` as incompatible; a failure to write is logged, never raised."""
        found = _identity(binary)
        if found is None:
            return
        real, fingerprint = found
        runtimes = self._read()
        runtimes[real] = {
            **fingerprint,
            "cause": "SIGILL",
            "recorded": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        data = json.dumps({"version": _VERSION, "runtimes": runtimes}, indent=2).encode()
        try:
            write_private_atomically(self.path, data)
        except OSError as exc:
            log.warning("cannot remember the incompatible runtime in %s: %s", self.path, exc)

    def _read(self) -> dict[str, Any]:
        with contextlib.suppress(OSError, ValueError):
            document = json.loads(self.path.read_text(encoding="utf-8"))
            runtimes = document.get("runtimes") if isinstance(document, dict) else None
            if isinstance(runtimes, dict):
                return runtimes
        return {}
