"""Memory of process trees: RSS of a process and its descendants, and VRAM per pid (NVML).

Blocking (psutil and NVML calls): run these in a thread.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable

from muxtui.engine.monitor.gpu import GpuReader

log = logging.getLogger(__name__)


def tree_memory(pids: Iterable[int]) -> dict[int, tuple[int, int]]:
    """For each root pid: (RSS of it and all its descendants, VRAM they hold; 0 without NVML)."""
    import psutil

    roots = list(pids)
    vram_by_pid = gpu_memory_by_pid() if roots else {}
    result: dict[int, tuple[int, int]] = {}
    for root_pid in roots:
        rss = vram = 0
        try:
            root = psutil.Process(root_pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            result[root_pid] = (0, 0)
            continue
        for process in tree:
            with contextlib.suppress(psutil.Error):
                rss += process.memory_info().rss
            vram += vram_by_pid.get(process.pid, 0)
        result[root_pid] = (rss, vram)
    return result


# NVML is opened once per process, like the driver connection it stands for; the Monitor's
# reader does the reading, so per-process VRAM is counted one way everywhere.
_READER: GpuReader | None = None
_READER_LOCK = threading.Lock()


def gpu_memory_by_pid() -> dict[int, int]:
    """VRAM in use per pid, summed over NVIDIA GPUs; empty where NVML is unavailable."""
    global _READER
    with _READER_LOCK:
        if _READER is None:
            _READER = GpuReader()
            _READER.open()
        used: dict[int, int] = {}
        for gpu in _READER.read():
            for pid, amount in gpu.processes:
                used[pid] = used.get(pid, 0) + amount
        return used
