"""Closing the loop: what a running server really holds, stored beside what was predicted.

`measure_process` reads a process tree's memory (RSS split into anonymous and file-backed
pages on Linux, VRAM per process through NVML); `FitStore` keeps each measurement with the
estimate made for the same settings in a small SQLite file (mode 0600), so `doctor` and the
Hardware pane can show estimate, measured and the error. Everything here blocks: run it in
a thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from muxtui.engine.fit.estimate import Estimate, FitParams

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fit_measurements (
    id INTEGER PRIMARY KEY,
    model_path TEXT NOT NULL,
    file_bytes INTEGER NOT NULL,
    phase TEXT NOT NULL,
    params TEXT NOT NULL,
    estimate_host INTEGER,
    estimate_vram INTEGER,
    rss INTEGER NOT NULL,
    anon INTEGER NOT NULL,
    file INTEGER NOT NULL,
    vram INTEGER NOT NULL,
    measured_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS fit_by_model ON fit_measurements (model_path, measured_at);
"""


@dataclass(frozen=True)
class Measured:
    """Memory of a server's process tree at one moment; sizes in bytes."""

    rss: int
    anon: int  # anonymous pages: heap, KV cache, buffers (what cannot be dropped)
    file: int  # file-backed pages: the mmap'd model and the libraries (page cache)
    vram: int  # NVIDIA VRAM of the tree; 0 without NVML
    pids: tuple[int, ...] = ()
    at: float = 0.0


@dataclass(frozen=True)
class FitRecord:
    """One measurement with the estimate made for the same model and settings."""

    model_path: str
    file_bytes: int
    phase: str  # "load" or "first_request"
    params: FitParams
    estimate_host: int | None
    estimate_vram: int | None
    measured: Measured

    @property
    def host_error(self) -> float | None:
        """(estimate - measured) / measured for system RAM, or None without an estimate."""
        if self.estimate_host is None or self.measured.rss <= 0:
            return None
        return (self.estimate_host - self.measured.rss) / self.measured.rss


def measure_process(pid: int) -> Measured:
    """Memory of `pid` and its descendants now; raises ProcessLookupError if it is gone."""
    import psutil

    from muxtui.engine.monitor.procmem import gpu_memory_by_pid

    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        raise ProcessLookupError(pid) from None
    vram_by_pid = gpu_memory_by_pid()
    rss = anon = file = vram = 0
    pids = []
    for process in tree:
        try:
            split = _linux_split(process.pid)
            if split is None:
                info = process.memory_info()
                split = (int(info.rss), int(info.rss), 0)
        except (psutil.Error, OSError):
            continue
        pids.append(process.pid)
        rss += split[0]
        anon += split[1]
        file += split[2]
        vram += vram_by_pid.get(process.pid, 0)
    return Measured(rss, anon, file, vram, tuple(pids), time.time())


def _linux_split(pid: int) -> tuple[int, int, int] | None:
    """(rss, anonymous, file-backed) from /proc/PID/smaps_rollup, else /proc/PID/status."""
    if not sys.platform.startswith("linux"):
        return None
    fields: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except FileNotFoundError:
        text = ""
    except PermissionError:
        return None
    if text:
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                fields[parts[0].rstrip(":")] = int(parts[1]) * 1024
        rss = fields.get("Rss", 0)
        anon = fields.get("Anonymous", 0)
        return rss, anon, max(0, rss - anon)
    status = Path(f"/proc/{pid}/status").read_text()
    for line in status.splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            fields[key] = int(parts[0]) * 1024
    anon = fields.get("RssAnon", 0) + fields.get("RssShmem", 0)
    return fields.get("VmRSS", 0), anon, fields.get("RssFile", 0)


class FitStore:
    """Measurements beside estimates, in SQLite (0600 in a 0700 folder)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fresh = not self.path.exists()
        if fresh:
            # Create it private before SQLite opens it: model paths say what a person runs.
            descriptor = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(descriptor)
        connection = sqlite3.connect(self.path)
        connection.executescript(_SCHEMA)
        return connection

    def add(self, record: FitRecord) -> None:
        """Keep `record`."""
        with contextlib.closing(self._connect()) as connection, connection:
            measured = record.measured
            connection.execute(
                "INSERT INTO fit_measurements (model_path, file_bytes, phase, params, "
                "estimate_host, estimate_vram, rss, anon, file, vram, measured_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.model_path,
                    record.file_bytes,
                    record.phase,
                    json.dumps(asdict(record.params), sort_keys=True),
                    record.estimate_host,
                    record.estimate_vram,
                    measured.rss,
                    measured.anon,
                    measured.file,
                    measured.vram,
                    measured.at,
                ),
            )

    def latest(self, model_path: str) -> FitRecord | None:
        """The newest measurement of the model at `model_path`, if any."""
        found = self.history(model_path, limit=1)
        return found[0] if found else None

    def history(self, model_path: str, limit: int = 20) -> list[FitRecord]:
        """Measurements of one model, newest first."""
        if not self.path.exists():
            return []
        with contextlib.closing(self._connect()) as connection:
            rows = connection.execute(
                "SELECT model_path, file_bytes, phase, params, estimate_host, estimate_vram, "
                "rss, anon, file, vram, measured_at FROM fit_measurements "
                "WHERE model_path = ? ORDER BY measured_at DESC, id DESC LIMIT ?",
                (model_path, limit),
            ).fetchall()
        return [_record(row) for row in rows]


def _record(row: Sequence[object]) -> FitRecord:
    path, size, phase, params, host, vram, rss, anon, file, used_vram, at = row
    known = {key: value for key, value in json.loads(str(params)).items()}
    fields = FitParams.__dataclass_fields__
    return FitRecord(
        model_path=str(path),
        file_bytes=int(str(size)),
        phase=str(phase),
        params=FitParams(**{k: v for k, v in known.items() if k in fields}),
        estimate_host=None if host is None else int(str(host)),
        estimate_vram=None if vram is None else int(str(vram)),
        measured=Measured(
            int(str(rss)), int(str(anon)), int(str(file)), int(str(used_vram)), (), float(str(at))
        ),
    )


def record_measurement(
    store: FitStore,
    pid: int,
    model_path: str,
    argv: Sequence[str],
    *,
    phase: str = "first_request",
    gpus: int = 0,
) -> FitRecord:
    """Measure server `pid` (started with `argv` for `model_path`), estimate the same settings,
    store both and return them; the manager calls this after a load and after a first request.
    """
    from muxtui.engine.fit.flags import params_from_argv
    from muxtui.engine.fit.gguf import GgufError
    from muxtui.engine.fit.shape import read_model

    measured = measure_process(pid)
    params = params_from_argv(argv)
    estimate: Estimate | None = None
    file_bytes = 0
    with contextlib.suppress(GgufError):
        shape = read_model(model_path)
        file_bytes = shape.file_bytes
        from muxtui.engine.fit.estimate import estimate as make_estimate

        estimate = make_estimate(shape, params, gpus=gpus)
    vram = None
    if estimate is not None:
        vram = sum(d.total for d in estimate.devices if d.device != "cpu")
    record = FitRecord(
        model_path=model_path,
        file_bytes=file_bytes,
        phase=phase,
        params=params,
        estimate_host=None if estimate is None else estimate.host.total,
        estimate_vram=vram,
        measured=measured,
    )
    store.add(record)
    return record
