"""Model servers' whole process trees: RSS (anonymous vs file-backed on Linux) and CPU.

Looking up a tree's descendants and recognising servers another muxtui started (processes
whose command line names a known model file) both cost more than a sample's other reads, so
they happen every few seconds, not every sample. On Linux every figure comes from small reads
under /proc (`status` for memory, `stat` for CPU time, `task/*/children` for descendants);
elsewhere psutil provides them.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import psutil

DESCENDANTS_EVERY_S = 5.0  # how stale a tree's list of descendants may get
FOREIGN_EVERY_S = 15.0  # how often other muxtuis' servers are looked for
_LINUX = sys.platform.startswith("linux")
_TICKS = os.sysconf("SC_CLK_TCK") if _LINUX else 100


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
    if not _LINUX:
        return psutil.Process(pid).memory_info().rss, None, None
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
    if b"RssAnon" not in figures:
        return rss, None, None
    return rss, figures[b"RssAnon"], figures.get(b"RssFile", 0) + figures.get(b"RssShmem", 0)


def _cpu_seconds(pid: int) -> tuple[float, int]:
    """(CPU seconds used, start time) of one process; the start time tells reused pids apart."""
    if not _LINUX:
        process = psutil.Process(pid)
        times = process.cpu_times()
        return times.user + times.system, int(process.create_time() * 1000)
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError as exc:
        raise psutil.NoSuchProcess(pid) from exc
    fields = stat.rpartition(b")")[2].split()  # the name in parentheses may hold spaces
    return (int(fields[11]) + int(fields[12])) / _TICKS, int(fields[19])


def _children(pid: int) -> list[int]:
    """The direct children of one process."""
    if not _LINUX:
        with contextlib.suppress(psutil.Error):
            return [child.pid for child in psutil.Process(pid).children()]
        return []
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as handle:
                found.extend(int(child) for child in handle.read().split())
        except OSError:
            continue
    return found


def _command_lines(model_paths: Iterable[str]) -> dict[int, list[str]]:
    """The command line of every process that mentions one of the model paths."""
    needles = [path.encode() for path in model_paths if path]
    found: dict[int, list[str]] = {}
    if not _LINUX:
        for process in psutil.process_iter(["pid", "cmdline"]):
            argv = process.info.get("cmdline") or []
            if any(needle.decode() in arg for arg in argv for needle in needles):
                found[process.info["pid"]] = argv
        return found
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                raw = handle.read()
        except OSError:
            continue
        if any(needle in raw for needle in needles):
            found[int(entry.name)] = raw.decode(errors="replace").rstrip("\0").split("\0")
    return found


class ProcessTrees:
    """Measures process trees by their root pid; used from one thread."""

    def __init__(self) -> None:
        self._trees: dict[int, list[int]] = {}  # root -> pids of its tree
        self._cpu: dict[int, tuple[float, int, float]] = {}  # pid -> (seconds, start, when)
        self._trees_at = float("-inf")
        self._foreign_at = float("-inf")
        self._foreign: tuple[ForeignServer, ...] = ()

    def measure(
        self, roots: Iterable[int], now: float, model_paths: Mapping[str, str] | None = None
    ) -> dict[int, TreeFigures]:
        """Figures of each root's tree and of each recognised foreign server's tree."""
        if model_paths and now - self._foreign_at >= FOREIGN_EVERY_S:
            self._foreign = _recognise(_command_lines(model_paths.values()), model_paths)
            self._foreign_at = now
        elif not model_paths:
            self._foreign = ()
        wanted = frozenset(roots) | {server.pid for server in self._foreign}
        if now - self._trees_at >= DESCENDANTS_EVERY_S or not wanted <= set(self._trees):
            self._trees = {root: self._descendants(root) for root in wanted}
            self._trees_at = now
            live = {pid for tree in self._trees.values() for pid in tree}
            self._cpu = {pid: seen for pid, seen in self._cpu.items() if pid in live}
        figures = {}
        for root in wanted:
            summed = self._sum(self._trees.get(root, [root]))
            if summed.pids:
                figures[root] = summed
        return figures

    def foreign(self, own: frozenset[int]) -> tuple[ForeignServer, ...]:
        """Servers recognised by their model file, less those inside `own` trees."""
        return tuple(server for server in self._foreign if server.pid not in own)

    @staticmethod
    def _descendants(root: int) -> list[int]:
        found: list[int] = []
        stack = [root]
        seen: set[int] = set()
        while stack and len(found) < 10_000:
            pid = stack.pop()
            if pid not in seen:
                seen.add(pid)
                found.append(pid)
                stack.extend(_children(pid))
        return found

    def _sum(self, pids: list[int]) -> TreeFigures:
        rss = anon = file = 0
        split = True
        cpu = 0.0
        alive = []
        clock = time.monotonic()
        for pid in pids:
            try:
                process_rss, process_anon, process_file = process_memory(pid)
                seconds, start = _cpu_seconds(pid)
            except psutil.Error:
                continue
            previous = self._cpu.get(pid)
            self._cpu[pid] = (seconds, start, clock)
            if previous is not None and previous[1] == start and clock > previous[2]:
                cpu += 100 * max(seconds - previous[0], 0.0) / (clock - previous[2])
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
    cmdlines: Mapping[int, list[str]], model_paths: Mapping[str, str]
) -> tuple[ForeignServer, ...]:
    """Processes serving one of the model files (`-m FILE`), roots of their trees only."""
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
    nested = {child for pid in matches for child in _children(pid)}
    return tuple(
        ForeignServer(name, pid, port)
        for pid, (name, port) in sorted(matches.items())
        if pid not in nested
    )


def _path_args(argv: list[str]) -> Iterable[str]:
    """The values given to -m / --model (llama-server, mlx_lm.server): the model file."""
    for index, arg in enumerate(argv[1:], start=1):
        if arg in ("-m", "--model") and index + 1 < len(argv):
            yield argv[index + 1]
        elif arg.startswith(("-m=", "--model=")):
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
