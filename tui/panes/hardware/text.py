"""What the Hardware pane writes: the detected machine, a row per model, the what-if's devices.

Pure functions from the engine's fit dataclasses to text and table cells; no widgets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text

if TYPE_CHECKING:
    from muxtui.engine.fit.estimate import DeviceEstimate
    from muxtui.engine.fit.hardware import HardwareProfile
    from muxtui.engine.fit.recommend import BudgetAdvice, WhatIf
    from muxtui.engine.fit.report import ModelFit, Problem

GIB = 2**30
MIB = 2**20
NONE = "–"
# The figures that decide come first, so a narrow terminal still shows them.
MODEL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("model", "model"),
    ("fits", "fits"),
    ("estimate", "estimate"),
    ("measured", "measured"),
    ("error", "error"),
    ("ngl", "-ngl"),
    ("ctx", "-c"),
    ("np", "-np"),
    ("kv", "KV"),
    ("cram", "cache-ram"),
    ("arch", "arch"),
    ("file", "file"),
)
DEVICE_COLUMNS = ("device", "weights", "KV cache", "compute", "other", "total", "at most", "free")


def size(count: int | None) -> str:
    """Bytes as MiB below a GiB, else GiB with one decimal; a dash for none."""
    if count is None:
        return NONE
    if count < GIB:
        return f"{count / MIB:.0f} MiB"
    return f"{count / GIB:.1f} GiB"


def detected(hardware: HardwareProfile, budget: BudgetAdvice | None) -> list[tuple[str, str]]:
    """The machine as labelled lines: CPU, instruction sets, RAM, GPUs, the warm budget."""
    cpu, memory = hardware.cpu, hardware.memory
    lines: list[tuple[str, str]] = [
        ("CPU", f"{cpu.model} · {cpu.physical_cores} cores, {cpu.logical_cores} threads"),
        ("ISA", " ".join(feature.upper() for feature in cpu.features) or "none detected"),
    ]
    ram = f"{size(memory.available)} free of {size(memory.total)}"
    if memory.cgroup_limit is not None:
        ram += f" · container limit {size(memory.cgroup_limit)}"
        ram += f", {size(memory.usable_available)} of it free"
    lines.append(("RAM", ram))
    for gpu in hardware.gpus:
        text = f"{gpu.name} · {size(gpu.memory_free)} free of {size(gpu.memory_total)}"
        if gpu.driver:
            text += f" · driver {gpu.driver}"
        lines.append((f"GPU {gpu.index}", text))
    if not hardware.gpus:
        lines.append(("GPU", f"none ({hardware.gpu_status or 'not found'})"))
    if hardware.unified_memory:
        lines.append(("memory", "unified: the GPU draws on system RAM"))
    if budget is not None:
        warm = f"{budget.keep_warm} at once, memory_budget_gb = {budget.memory_budget_gb:g}"
        lines.append(("keep warm", f"{warm} ({budget.reason})"))
    return lines


def model_row(model: ModelFit) -> tuple[str | Text, ...]:
    """The cells of one model's row, in MODEL_COLUMNS order; memory as RAM +VRAM, as measured."""
    configured = model.configured
    if configured is None:
        return (model.name, *([NONE] * (len(MODEL_COLUMNS) - 1)))
    measured = model.measured
    seen = NONE
    error = NONE
    if measured is not None:
        seen = size(measured.measured.rss)
        if measured.measured.vram:
            seen += f" +{size(measured.measured.vram)}"
        if measured.host_error is not None:
            error = f"{measured.host_error:+.0%}"
    fits = Text("yes", style="green") if model.fits else Text("no", style="bold red")
    advice = model.recommendation
    flags: tuple[str, ...] = (NONE,) * 5
    if advice is not None:
        params = advice.params
        flags = (
            "all" if params.ngl < 0 else str(params.ngl),
            str(params.ctx),
            str(params.slots),
            params.cache_type_k,
            f"{params.cache_ram_mib} MiB",
        )
    on_gpus = configured.total - configured.host.total
    weighed = size(configured.host.total) + (f" +{size(on_gpus)}" if on_gpus else "")
    return (
        model.name,
        fits,
        weighed,
        seen,
        error,
        *flags,
        model.architecture or NONE,
        size(model.file_bytes),
    )


def problem_lines(problems: tuple[Problem, ...]) -> Text:
    """Each problem with its fix, one line each."""
    out = Text()
    for index, problem in enumerate(problems):
        if index:
            out.append("\n")
        out.append("⚠ ", style="bold yellow")
        out.append(f"{problem.subject}: {problem.message}")
        out.append(f" · fix: {problem.fix}", style="dim")
    return out


def device_rows(result: WhatIf, hardware: HardwareProfile) -> list[tuple[str, ...]]:
    """One row per device of the what-if: its parts, total, what it needs at most, free now."""
    rows = []
    free = {f"gpu{gpu.index}": gpu.memory_free for gpu in hardware.gpus}
    names = {f"gpu{gpu.index}": f"GPU {gpu.index}" for gpu in hardware.gpus}
    estimate = result.estimate
    for device in estimate.devices:
        if device.device == "cpu":
            name, needs, room = "CPU / RAM", estimate.host_needed, hardware.memory.usable_available
        else:
            name = names.get(device.device, device.device)
            needs, room = device.needed, free.get(device.device, 0)
        rows.append((name, *_parts(device), size(needs), size(room)))
    return rows


def _parts(device: DeviceEstimate) -> tuple[str, ...]:
    return (
        size(device.weights),
        size(device.kv_cache + device.recurrent),
        size(device.compute + device.output),
        size(device.overhead + device.checkpoints),
        size(device.total),
    )


def ngl_label(ngl: int, layers_all: int) -> str:
    """`-ngl` as a person reads it: `0 (CPU)` and `N (all)` for the ends."""
    if ngl == 0:
        return "0 (CPU)"
    if ngl < 0 or ngl >= layers_all:
        return f"{layers_all} (all)"
    return str(ngl)
