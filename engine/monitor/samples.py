"""What one sample holds: system memory and CPU, each model server's tree, each GPU, alerts.

All plain frozen dataclasses; `sample_to_json` gives the shape `muxtui monitor --json` prints
and the sample log stores (DESIGN.md's command-line contract; sizes in bytes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ServerSample:
    """One model server's whole process tree, with what its own endpoints report."""

    name: str  # the model name the server serves
    pid: int  # the tree's root
    rss: int  # resident memory of every process in the tree
    rss_anon: int | None  # of which anonymous (heap, KV cache); None where the OS doesn't say
    rss_file: int | None  # of which file-backed (mmap'd weights); None where the OS doesn't say
    cpu_percent: float  # of one core, summed over the tree
    vram: int  # VRAM held by the tree's processes, all GPUs
    processes: int = 1
    foreign: bool = False  # started by another muxtui (or by hand), found by its model path
    port: int | None = None
    requests_processing: int | None = None  # from the server's /metrics or /slots
    tokens_per_s: float | None = None  # generated tokens per second since the last sample
    kv_used: float | None = None  # share of the KV cache (context slots) in use, 0..1


@dataclass(frozen=True)
class GpuSample:
    """One GPU: utilisation, VRAM, temperature, power, and whose VRAM it is."""

    index: int
    name: str
    util_percent: float | None
    memory_used: int
    memory_total: int
    temperature_c: float | None
    power_w: float | None
    power_limit_w: float | None = None
    slowdown_temperature_c: float | None = None
    processes: tuple[tuple[int, int], ...] = ()  # (pid, VRAM bytes) as the driver lists them
    vram_by_model: tuple[tuple[str, int], ...] = ()
    vram_other: int = 0  # used VRAM no model accounts for (other programs, driver, contexts)


@dataclass(frozen=True)
class Alert:
    """Something to act on: what it is about, the figure, and what to do."""

    kind: str  # "memory-pressure", "swapping", "server-leak", "muxtui-growth", ...
    subject: str  # "RAM", "swap", a model name, "muxtui", "GPU 0"
    message: str
    since: float = 0.0  # epoch seconds it was first raised (kept while it stays raised)


@dataclass(frozen=True)
class Sample:
    """Everything measured at one moment."""

    ts: float  # epoch seconds
    ram_total: int
    ram_available: int
    ram_used: int
    swap_total: int
    swap_used: int
    swap_in_per_s: float  # bytes swapped in per second since the last sample
    cpu_percent: float  # of the whole machine
    process_rss: int  # muxtui's own resident memory
    servers: tuple[ServerSample, ...] = ()
    gpus: tuple[GpuSample, ...] = ()
    gpu_status: str = ""  # why there are no GPU figures; "" when there are
    alerts: tuple[Alert, ...] = ()
    unified_memory: bool = False  # Apple Silicon: the GPU uses the RAM figures above
    notes: tuple[str, ...] = field(default_factory=tuple)  # e.g. servers it cannot identify

    def server(self, name: str) -> ServerSample | None:
        """The sample of the server serving `name`, if it runs."""
        return next((server for server in self.servers if server.name == name), None)


def sample_to_json(sample: Sample) -> dict[str, Any]:
    """The sample as `muxtui monitor --json` prints it (DESIGN.md keys first; sizes in bytes)."""
    return {
        "ts": round(sample.ts, 3),
        "ram": {
            "total": sample.ram_total,
            "available": sample.ram_available,
            "used": sample.ram_used,
        },
        "swap": {
            "total": sample.swap_total,
            "used": sample.swap_used,
            "in_per_s": round(sample.swap_in_per_s),
        },
        "cpu_percent": round(sample.cpu_percent, 1),
        "process": {"rss": sample.process_rss},
        "servers": [_server_json(server) for server in sample.servers],
        "gpus": [_gpu_json(gpu) for gpu in sample.gpus],
        "gpu_status": sample.gpu_status,
        "unified_memory": sample.unified_memory,
        "alerts": [
            {"kind": alert.kind, "subject": alert.subject, "message": alert.message}
            for alert in sample.alerts
        ],
        "notes": list(sample.notes),
    }


def _server_json(server: ServerSample) -> dict[str, Any]:
    return {
        "name": server.name,
        "pid": server.pid,
        "rss": server.rss,
        "cpu_percent": round(server.cpu_percent, 1),
        "vram": server.vram,
        "rss_anon": server.rss_anon,
        "rss_file": server.rss_file,
        "processes": server.processes,
        "foreign": server.foreign,
        "port": server.port,
        "requests_processing": server.requests_processing,
        "tokens_per_s": None if server.tokens_per_s is None else round(server.tokens_per_s, 2),
        "kv_used": None if server.kv_used is None else round(server.kv_used, 4),
    }


def _gpu_json(gpu: GpuSample) -> dict[str, Any]:
    return {
        "index": gpu.index,
        "name": gpu.name,
        "util_percent": gpu.util_percent,
        "memory_used": gpu.memory_used,
        "memory_total": gpu.memory_total,
        "temperature_c": gpu.temperature_c,
        "power_w": None if gpu.power_w is None else round(gpu.power_w, 1),
        "power_limit_w": gpu.power_limit_w,
        "vram_by_model": dict(gpu.vram_by_model),
        "vram_other": gpu.vram_other,
    }
