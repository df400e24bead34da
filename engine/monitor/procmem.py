"""Memory of process trees: RSS of a process and its descendants, and VRAM per pid (NVML).

Blocking (psutil and NVML calls): run these in a thread.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable

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


class _Nvml:
    """NVML, initialised once; on a machine without an NVIDIA driver it stays unavailable."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: bool | None = None

    def memory_by_pid(self) -> dict[int, int]:
        with self._lock:
            if self._ready is None:
                self._ready = self._init()
            if not self._ready:
                return {}
            try:
                return self._read()
            except Exception as exc:  # NVML errors are many and all mean "no figures"
                log.debug("NVML read failed: %s", exc)
                return {}

    @staticmethod
    def _init() -> bool:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:  # no library, no driver, no GPU: no VRAM figures
            return False
        return True

    @staticmethod
    def _read() -> dict[int, int]:
        import pynvml

        used: dict[int, int] = {}
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            getters = (
                pynvml.nvmlDeviceGetComputeRunningProcesses,
                pynvml.nvmlDeviceGetGraphicsRunningProcesses,
            )
            for getter in getters:
                for info in getter(handle):
                    amount = info.usedGpuMemory
                    if isinstance(amount, int) and amount > 0:
                        used[info.pid] = used.get(info.pid, 0) + amount
        return used


# NVML is initialised once per process, like the driver connection it stands for.
_NVML = _Nvml()


def gpu_memory_by_pid() -> dict[int, int]:
    """VRAM in use per pid across NVIDIA GPUs; empty where NVML is unavailable."""
    return _NVML.memory_by_pid()
