"""The optional JSONL sample log (`[monitor] log`): one line per sample, mode 0600, rotated."""

from __future__ import annotations

import json
import os
from pathlib import Path

from muxtui.engine.errors import ConfigError
from muxtui.engine.monitor.samples import Sample, sample_to_json


class SampleLog:
    """Appends samples to a file; at `max_bytes` the file becomes `NAME.1` (one old file kept)."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max(max_bytes, 4096)
        self._fd: int | None = None
        self._size = 0
        self.error = ""  # why logging stopped, once it has

    def open(self) -> None:
        """Open (creating with mode 0600) for appending; raise ConfigError naming the fix."""
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.fchmod(self._fd, 0o600)
            self._size = os.fstat(self._fd).st_size
        except OSError as exc:
            reason = exc.strerror or exc.__class__.__name__
            raise ConfigError(
                f"config error: [monitor] log: cannot write {self.path} ({reason}); "
                'point it at a writable file or set it to "" to turn the log off'
            ) from None

    def write(self, sample: Sample) -> None:
        """Append one sample as a JSON line, rotating first if the file is full."""
        if self._fd is None:
            return
        line = (json.dumps(sample_to_json(sample), separators=(",", ":")) + "\n").encode()
        try:
            if self._size + len(line) > self.max_bytes:
                self._rotate()
            os.write(self._fd, line)
        except (OSError, ConfigError) as exc:  # disk full, file removed: stop logging, say so
            self.close()
            self.error = f"sample log stopped: cannot write {self.path} ({exc})"
            return
        self._size += len(line)

    def close(self) -> None:
        """Close the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _rotate(self) -> None:
        self.close()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self.open()
