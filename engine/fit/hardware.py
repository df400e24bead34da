"""What this machine has to run models on: CPU, memory (and container limits), NVIDIA GPUs,
Apple Silicon's unified memory.

Every probe here blocks (files under /proc and /sys, NVML, `sysctl`): run `detect_hardware`
in a thread. Each part fails soft: a probe that cannot answer leaves its field empty and says
why in `gpu_status` or `notes`, never raises.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

# The instruction sets llama.cpp's CPU backend picks kernels by (its system_info line).
CPU_FEATURES = (
    "avx",
    "avx2",
    "f16c",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "sve",
    "asimddp",
    "i8mm",
)
_UNLIMITED = 1 << 60  # cgroup v1 writes a huge number for "no limit"


@dataclass(frozen=True)
class CpuInfo:
    """The CPU: model name, cores and the instruction sets that matter to llama.cpp."""

    model: str
    physical_cores: int
    logical_cores: int
    machine: str  # platform.machine(): x86_64, aarch64, arm64
    features: tuple[str, ...] = ()

    def has(self, feature: str) -> bool:
        """Whether the CPU reports `feature` (a /proc/cpuinfo flag name)."""
        return feature in self.features

    @property
    def repacks_on_load(self) -> bool:
        """Whether llama.cpp's CPU backend repacks some quantized weights into a second copy.

        On x86 it does so with AVX2 (Q4_0, Q4_K, IQ4_NL); on ARM with dot-product support.
        """
        return self.has("avx2") or self.has("asimddp") or self.has("i8mm")


@dataclass(frozen=True)
class MemoryInfo:
    """System memory and, inside a container, its cgroup limit; sizes in bytes."""

    total: int
    available: int
    swap_total: int = 0
    cgroup_limit: int | None = None  # None: no limit found
    cgroup_usage: int | None = None

    @property
    def usable_total(self) -> int:
        """Total memory a process here can have: the smaller of RAM and the cgroup limit."""
        if self.cgroup_limit is None:
            return self.total
        return min(self.total, self.cgroup_limit)

    @property
    def usable_available(self) -> int:
        """Memory free now for a new process, within the cgroup limit if there is one."""
        if self.cgroup_limit is None:
            return self.available
        left = self.cgroup_limit - (self.cgroup_usage or 0)
        return max(0, min(self.available, left))


@dataclass(frozen=True)
class GpuInfo:
    """One GPU: NVIDIA through NVML, or Apple Silicon's GPU sharing the unified memory."""

    index: int
    name: str
    vendor: str  # "nvidia" or "apple"
    memory_total: int
    memory_free: int
    driver: str = ""
    compute_capability: str = ""


@dataclass(frozen=True)
class HardwareProfile:
    """Everything `detect_hardware` found."""

    cpu: CpuInfo
    memory: MemoryInfo
    gpus: tuple[GpuInfo, ...] = ()
    unified_memory: bool = False  # Apple Silicon: the GPU draws on the same RAM
    gpu_status: str = ""  # why there is no GPU, when there is none
    notes: tuple[str, ...] = field(default_factory=tuple)


def detect_hardware(cgroup_root: Path = Path("/sys/fs/cgroup")) -> HardwareProfile:
    """Probe the CPU, memory, cgroup limit and GPUs (blocking: run it in a thread)."""
    notes: list[str] = []
    if sys.platform == "darwin":
        cpu, memory, gpus = _darwin(notes)
        unified = bool(gpus)
        status = "" if gpus else "no Apple Silicon GPU found"
        return HardwareProfile(cpu, memory, gpus, unified, status, tuple(notes))
    cpu = read_cpu()
    memory = read_memory(cgroup_root)
    gpus, status = read_nvidia_gpus()
    return HardwareProfile(cpu, memory, gpus, False, status, tuple(notes))


# --- CPU -------------------------------------------------------------------------------------


def read_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """The CPU as /proc/cpuinfo and psutil describe it."""
    import psutil

    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        text = ""
    model, features = parse_cpuinfo(text)
    logical = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or logical
    return CpuInfo(
        model=model or platform.processor() or platform.machine(),
        physical_cores=physical,
        logical_cores=logical,
        machine=platform.machine(),
        features=features,
    )


def parse_cpuinfo(text: str) -> tuple[str, tuple[str, ...]]:
    """(model name, the CPU_FEATURES present) from the text of /proc/cpuinfo."""
    model = ""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, tuple(f for f in CPU_FEATURES if f in flags)


# --- memory ----------------------------------------------------------------------------------


def read_memory(cgroup_root: Path = Path("/sys/fs/cgroup")) -> MemoryInfo:
    """RAM and swap from psutil, the container limit from the cgroup files."""
    import psutil

    virtual = psutil.virtual_memory()
    swap = psutil.swap_memory()
    limit, usage = read_cgroup_limit(cgroup_root)
    return MemoryInfo(int(virtual.total), int(virtual.available), int(swap.total), limit, usage)


def read_cgroup_limit(root: Path) -> tuple[int | None, int | None]:
    """(limit, usage) in bytes from cgroup v2 `memory.max` or v1 `memory.limit_in_bytes`."""
    candidates = [
        (root / "memory.max", root / "memory.current"),
        (root / "memory" / "memory.limit_in_bytes", root / "memory" / "memory.usage_in_bytes"),
    ]
    v2_path, v1_path = _own_cgroup_paths()
    if v1_path:
        own = root / "memory" / v1_path
        candidates.insert(0, (own / "memory.limit_in_bytes", own / "memory.usage_in_bytes"))
    if v2_path:
        candidates.insert(0, (root / v2_path / "memory.max", root / v2_path / "memory.current"))
    for limit_file, usage_file in candidates:
        limit = _read_int(limit_file)
        if limit is None:
            continue
        if limit >= _UNLIMITED:
            return None, None
        return limit, _read_int(usage_file)
    return None, None


def _own_cgroup_paths() -> tuple[str, str]:
    """This process's cgroup below the mount point: (v2 path, v1 memory path); '' if at root."""
    v2 = v1 = ""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return v2, v1
    for line in lines:
        _, controllers, where = line.split(":", 2) if line.count(":") >= 2 else ("", "", "")
        where = where.strip("/")
        if controllers == "" and where:
            v2 = where
        elif "memory" in controllers.split(",") and where:
            v1 = where
    return v2, v1


def _read_int(path: Path) -> int | None:
    """An integer file; 'max' (cgroup v2 for no limit) reads as unlimited; None if absent."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return _UNLIMITED
    try:
        return int(text)
    except ValueError:
        return None


# --- NVIDIA ----------------------------------------------------------------------------------


def read_nvidia_gpus() -> tuple[tuple[GpuInfo, ...], str]:
    """NVIDIA GPUs through NVML, and '' or the reason there are none."""
    try:
        import pynvml
    except ImportError:
        return (), "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...
        return (), f"no NVIDIA driver ({type(exc).__name__})"
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
                capability = f"{major}.{minor}"
            except Exception:
                capability = ""
            gpus.append(
                GpuInfo(
                    index=index,
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    vendor="nvidia",
                    memory_total=int(memory.total),
                    memory_free=int(memory.free),
                    driver=driver,
                    compute_capability=capability,
                )
            )
    except Exception as exc:
        return (), f"NVML failed: {type(exc).__name__}"
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()
    return tuple(gpus), "" if gpus else "NVML found no GPU"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- Apple Silicon ---------------------------------------------------------------------------

# Metal lets one process wire about this share of unified memory (recommendedMaxWorkingSetSize).
APPLE_GPU_SHARE = 0.75


def _darwin(notes: list[str]) -> tuple[CpuInfo, MemoryInfo, tuple[GpuInfo, ...]]:
    import psutil

    chip = _sysctl("machdep.cpu.brand_string")
    physical = int(_sysctl("hw.physicalcpu") or 0) or (psutil.cpu_count(logical=False) or 1)
    logical = int(_sysctl("hw.logicalcpu") or 0) or (psutil.cpu_count() or physical)
    features = ("asimddp", "i8mm") if platform.machine() == "arm64" else ()
    cpu = CpuInfo(chip or platform.machine(), physical, logical, platform.machine(), features)
    virtual = psutil.virtual_memory()
    memory = MemoryInfo(int(virtual.total), int(virtual.available), int(psutil.swap_memory().total))
    if platform.machine() != "arm64" or not chip.startswith("Apple"):
        return cpu, memory, ()
    notes.append(f"GPU memory is unified: about {APPLE_GPU_SHARE:.0%} of RAM can be wired for it")
    gpu = GpuInfo(
        index=0,
        name=chip,
        vendor="apple",
        memory_total=int(memory.total * APPLE_GPU_SHARE),
        memory_free=int(min(memory.available, memory.total * APPLE_GPU_SHARE)),
    )
    return cpu, memory, (gpu,)


def _sysctl(name: str) -> str:
    try:
        done = subprocess.run(
            ["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""
