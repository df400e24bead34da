"""GPU figures through NVML, opened once, and per-process VRAM attributed to models.

Without an NVIDIA driver (or GPU, or `nvidia-ml-py`) the reader says why in `status` and
returns no GPUs; it never raises. Every figure a GPU does not support is None. Apple Silicon
has no NVML: its GPU shares the RAM (unified memory), which the RAM figures already show.
"""

from __future__ import annotations

import logging
import platform
import shutil
import sys
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from muxtui.engine.monitor.samples import GpuSample

log = logging.getLogger(__name__)


def apple_silicon() -> bool:
    """Whether this is a Mac with an Apple M-series chip (unified memory)."""
    return sys.platform == "darwin" and platform.machine() == "arm64"


def attribute_vram(
    gpu: GpuSample, trees: Mapping[str, Iterable[int]]
) -> tuple[tuple[tuple[str, int], ...], int]:
    """(VRAM per model, VRAM no model accounts for) on one GPU.

    `trees` maps a model name to the pids of its server's process tree; `gpu.processes` are
    the (pid, bytes) the driver lists. Whatever the GPU reports used beyond the attributed
    processes (other programs, the driver, contexts of processes it does not list) is
    "other", never dropped.
    """
    owner = {pid: name for name, pids in trees.items() for pid in pids}
    by_model: dict[str, int] = {}
    for pid, amount in gpu.processes:
        name = owner.get(pid)
        if name is not None:
            by_model[name] = by_model.get(name, 0) + amount
    attributed = sum(by_model.values())
    return tuple(sorted(by_model.items())), max(gpu.memory_used - attributed, 0)


def with_attribution(gpu: GpuSample, trees: Mapping[str, Iterable[int]]) -> GpuSample:
    """The GPU's figures with its VRAM attributed to models."""
    by_model, other = attribute_vram(gpu, trees)
    return replace(gpu, vram_by_model=by_model, vram_other=other)


class GpuReader:
    """NVML handles opened once; `read()` returns every GPU's figures or () with `status` set."""

    def __init__(self) -> None:
        self.status = "GPU figures not read yet"
        self._nvml: Any = None
        self._handles: list[tuple[int, Any, str, float | None, float | None]] = []
        self._process_getters: dict[str, Any] = {}

    def open(self) -> None:
        """Initialise NVML and look up each GPU's handle, name and limits (once)."""
        try:
            import pynvml
        except ImportError:
            self.status = "no GPU figures: nvidia-ml-py is not installed (pip install nvidia-ml-py)"
            return
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            self.status = _init_failure(pynvml, exc)
            return
        except OSError as exc:  # a broken library can fail below NVML's own error type
            self.status = f"no GPU figures: NVML could not load ({exc})"
            return
        self._nvml = pynvml
        try:
            count = pynvml.nvmlDeviceGetCount()
            for index in range(count):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                name = _text(pynvml.nvmlDeviceGetName(handle))
                power_limit = self._optional(pynvml.nvmlDeviceGetEnforcedPowerLimit, handle)
                slowdown = self._optional(
                    pynvml.nvmlDeviceGetTemperatureThreshold,
                    handle,
                    pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN,
                )
                self._handles.append(
                    (
                        index,
                        handle,
                        name,
                        None if power_limit is None else power_limit / 1000,
                        None if slowdown is None else float(slowdown),
                    )
                )
        except pynvml.NVMLError as exc:
            self.status = f"no GPU figures: NVML failed listing GPUs ({exc})"
            self._handles = []
            return
        self.status = "" if self._handles else "no GPU figures: the NVIDIA driver sees no GPU"

    def read(self) -> tuple[GpuSample, ...]:
        """Every GPU's figures now, not yet attributed; () without NVML (see `status`)."""
        if self._nvml is None or not self._handles:
            return ()
        nvml = self._nvml
        readings = []
        for index, handle, name, power_limit, slowdown in self._handles:
            try:
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            except nvml.NVMLError as exc:  # e.g. the GPU fell off the bus
                log.debug("NVML memory read failed on GPU %d: %s", index, exc)
                continue
            util = self._optional(nvml.nvmlDeviceGetUtilizationRates, handle)
            temperature = self._optional(
                nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU
            )
            power = self._optional(nvml.nvmlDeviceGetPowerUsage, handle)
            readings.append(
                GpuSample(
                    index=index,
                    name=name,
                    util_percent=None if util is None else float(util.gpu),
                    memory_used=int(memory.used),
                    memory_total=int(memory.total),
                    temperature_c=None if temperature is None else float(temperature),
                    power_w=None if power is None else power / 1000,
                    power_limit_w=power_limit,
                    slowdown_temperature_c=slowdown,
                    processes=self._processes(handle),
                )
            )
        return tuple(readings)

    def close(self) -> None:
        """Shut NVML down."""
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError as exc:
                log.debug("NVML shutdown failed: %s", exc)
            self._nvml = None
            self._handles = []

    def _processes(self, handle: Any) -> tuple[tuple[int, int], ...]:
        """(pid, VRAM) of compute and graphics processes; v3 calls with a v2 fallback."""
        used: dict[int, int] = {}
        for kind in ("Compute", "Graphics"):
            for info in self._running(kind, handle):
                amount = info.usedGpuMemory
                if isinstance(amount, int) and amount > 0:
                    # A process using both kinds is listed twice with the same memory.
                    used[info.pid] = max(used.get(info.pid, 0), amount)
        return tuple(sorted(used.items()))

    def _running(self, kind: str, handle: Any) -> list[Any]:
        nvml = self._nvml
        getter = self._process_getters.get(kind)
        if getter is not None:
            return self._optional(getter, handle) or []
        for version in ("_v3", "_v2"):
            candidate = getattr(nvml, f"nvmlDeviceGet{kind}RunningProcesses{version}", None)
            if candidate is None:
                continue
            try:
                found: list[Any] = candidate(handle)
            except nvml.NVMLError_FunctionNotFound:
                continue  # an older driver: try the older call
            except nvml.NVMLError as exc:
                log.debug("NVML %s processes failed: %s", kind, exc)
                return []
            self._process_getters[kind] = candidate
            return found
        return []

    def _optional(self, getter: Any, *args: Any) -> Any:
        """The figure, or None where this GPU or driver does not support it."""
        try:
            return getter(*args)
        except self._nvml.NVMLError:
            return None


def _init_failure(nvml: Any, exc: Exception) -> str:
    if isinstance(exc, nvml.NVMLError_LibraryNotFound):
        if apple_silicon():
            return apple_status()
        return "no GPU figures: no NVIDIA driver found (libnvidia-ml could not be loaded)"
    if isinstance(exc, nvml.NVMLError_DriverNotLoaded):
        return "no GPU figures: the NVIDIA driver is installed but not loaded (reboot or modprobe)"
    if isinstance(exc, nvml.NVMLError_NoPermission):
        return "no GPU figures: no permission to use the NVIDIA driver"
    return f"no GPU figures: NVML could not start ({exc})"


def apple_status() -> str:
    """What the GPU section says on Apple Silicon."""
    extra = (
        "; macmon is on PATH but its figures are not read yet"
        if shutil.which("macmon")
        else "; per-GPU figures need macmon"
    )
    return "Apple Silicon: the GPU shares the RAM above (unified memory)" + extra


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
