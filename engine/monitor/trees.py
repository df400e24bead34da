"""Model servers' whole process trees: RSS (anonymous vs file-backed on Linux) and CPU.

Finding a tree's descendants means reading every process on the machine, so it happens every
few seconds, not every sample; the figures of the processes found are read every sample from
`/proc/PID/status` (one small read each) with psutil elsewhere. The same scan recognises
servers another muxtui started: processes whose command line names a known model file.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import psutil

RESCAN_S = 5.0  # how stale a tree's list of descendants may get
_LINUX = sys.platform.startswith("linux")


@dataclass(frozen=True)
class TreeFigures:
    """One process tree summed up."""

    rss: int
    rss_anon: int | None
    rss_file: int | None
    cpu_percent: float
    pids: frozenset[int]


@dataclass(frozen=True)
class ForeignServer:
    """A server process this muxtui did not start, recognised by the model file it serves."""

    name: str
    pid: int
    port: int | None


def process_memory(pid: int) -> tuple[int, int | None, int | None]:
    """(RSS, anonymous, file-backed) bytes of one process; the split is None off Linux."""
    if _LINUX:
        try:
            with open(f"/proc/{pid}/status", "rb") as handle:
                status = handle.read()
        except OSError as exc:
            raise psutil.NoSuchProcess(pid) from exc
        figures = {}
        for line in status.splitlines():
            if line.startswith((b"VmRSS:", b"RssAnon:", b"RssFile:", b"RssShmem:")):
                key, _, value = line.partition(b":")
                figures[key] = int(value.split()[0]) * 1024
        rss = figures.get(b"VmRSS", 0)
        if b"RssAnon" in figures:
            return (
                rss,
                figures[b"RssAnon"],
                figures.get(b"RssFile", 0) + figures.get(b"RssShmem", 0),
            )
        return rss, None, None
    return psutil.Process(pid).memory_info().rss, None, None


class ProcessTrees:
    """Measures process trees by their root pid; used from one thread."""

    def __init__(self) -> None:
        self._processes: dict[int, psutil.Process] = {}  # kept for CPU percent deltas
        self._children: dict[int, list[int]] = {}
        self._cmdlines: dict[int, list[str]] = {}
        self._scanned_at = float("-inf")
        self._scanned_roots: frozenset[int] = frozenset()
        self._foreign: tuple[ForeignServer, ...] = ()

    def measure(
        self, roots: Iterable[int], now: float, model_paths: Mapping[str, str] | None = None
    ) -> dict[int, TreeFigures]:
        """Figures of each root's tree and of each recognised foreign server's tree.

        Descendants (and foreign servers) are looked up again when stale or the roots changed.
        """
        wanted = frozenset(roots)
        if now - self._scanned_at >= RESCAN_S or not wanted <= self._scanned_roots:
            self._scan(wanted, model_paths or {}, now)
        figures = {}
        for root in wanted | {server.pid for server in self._foreign}:
            tree = self._tree(root)
            if tree:
                figures[root] = self._sum(tree)
        return figures

    def foreign(self, own: frozenset[int]) -> tuple[ForeignServer, ...]:
        """Servers found by their model path in the last scan, less those in `own` trees."""
        return tuple(server for server in self._foreign if server.pid not in own)

    def _scan(self, roots: frozenset[int], model_paths: Mapping[str, str], now: float) -> None:
        attrs = ["pid", "ppid", "cmdline"] if model_paths else ["pid", "ppid"]
        children: dict[int, list[int]] = {}
        cmdlines: dict[int, list[str]] = {}
        for process in psutil.process_iter(attrs):
            info = process.info
            ppid = info.get("ppid")
            if ppid is not None:
                children.setdefault(ppid, []).append(info["pid"])
            if model_paths and info.get("cmdline"):
                cmdlines[info["pid"]] = info["cmdline"]
        self._children = children
        self._cmdlines = cmdlines
        self._scanned_at = now
        self._scanned_roots = roots
        self._foreign = _recognise(cmdlines, model_paths, children) if model_paths else ()
        live = set(self._descendants(roots)) | {s.pid for s in self._foreign}
        for server in self._foreign:
            live.update(self._descendants([server.pid]))
        self._processes = {pid: p for pid, p in self._processes.items() if pid in live}

    def _descendants(self, roots: Iterable[int]) -> list[int]:
        found: list[int] = []
        stack = list(roots)
        seen: set[int] = set()
        while stack:
            pid = stack.pop()
            if pid in seen:
                continue
            seen.add(pid)
            found.append(pid)
            stack.extend(self._children.get(pid, ()))
        return found

    def _tree(self, root: int) -> list[int]:
        return self._descendants([root])

    def _sum(self, pids: list[int]) -> TreeFigures:
        rss = anon = file = 0
        split = True
        cpu = 0.0
        alive = []
        for pid in pids:
            try:
                process_rss, process_anon, process_file = process_memory(pid)
                process = self._processes.get(pid)
                if process is None:
                    process = self._processes[pid] = psutil.Process(pid)
                    process.cpu_percent(None)  # primes the delta; the first figure is 0
                else:
                    cpu += process.cpu_percent(None)
            except psutil.Error:
                continue
            alive.append(pid)
            rss += process_rss
            if process_anon is None or process_file is None:
                split = False
            else:
                anon += process_anon
                file += process_file
        return TreeFigures(
            rss, anon if split else None, file if split else None, cpu, frozenset(alive)
        )


def _recognise(
    cmdlines: Mapping[int, list[str]],
    model_paths: Mapping[str, str],
    children: Mapping[int, list[int]],
) -> tuple[ForeignServer, ...]:
    """Processes whose command line names one of the model files, roots of their trees only."""
    by_path: dict[str, str] = {}
    for model, path in model_paths.items():
        if path:
            by_path.setdefault(path, model)
            with contextlib.suppress(OSError):
                by_path.setdefault(os.path.realpath(path), model)
    matches: dict[int, tuple[str, int | None]] = {}
    for pid, argv in cmdlines.items():
        found = next((by_path[arg] for arg in _path_args(argv) if arg in by_path), None)
        if found is not None:
            matches[pid] = (found, _port(argv))
    nested = {child for pid in matches for child in children.get(pid, ())}
    return tuple(
        ForeignServer(name, pid, port)
        for pid, (name, port) in sorted(matches.items())
        if pid not in nested
    )


def _path_args(argv: list[str]) -> Iterable[str]:
    for arg in argv[1:]:
        yield arg
        if arg.startswith("-") and "=" in arg:
            yield arg.partition("=")[2]


def _port(argv: list[str]) -> int | None:
    for index, arg in enumerate(argv):
        value = None
        if arg == "--port" and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith("--port="):
            value = arg.partition("=")[2]
        if value is not None and value.isdigit():
            return int(value)
    return None
