"""`muxtui doctor`: hardware, runtimes, providers, each local model's fit, and every problem
found with its fix; as a report or one JSON object."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from muxtui.cli import Context
    from muxtui.engine.fit.report import FitReport, ModelFit

GIB = 2**30


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `doctor`."""
    parser = subparsers.add_parser(
        "doctor",
        help="check hardware, runtimes, providers and which local models fit, with fixes",
        description=(
            "Detect the CPU, memory and GPUs; check the local server binaries and configured "
            "providers; estimate each local model's memory (and show what was measured when "
            "it last ran), recommend its flags, and list every problem with its fix."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--no-projection",
        action="store_true",
        help="skip llama-server's own fit projection (it starts the server briefly per model)",
    )


def run(args: argparse.Namespace, context: Context) -> int:
    """Print the report."""
    import asyncio

    report = asyncio.run(_collect(context, projection=not args.no_projection))
    if args.json:
        print(json.dumps(report_to_json(report), indent=2))
    else:
        print(format_report(report))
    return 0


async def _collect(context: Context, *, projection: bool) -> FitReport:
    from muxtui.engine.core import Engine

    async with Engine(context.config, context.paths, discover=False) as engine:
        return await engine.fit_report(projection=projection)


def report_to_json(report: FitReport) -> dict[str, Any]:
    """The report in DESIGN.md's `doctor --json` shape (sizes in bytes), with extras."""
    hardware = report.hardware
    return {
        "hardware": {
            "cpu_model": hardware.cpu.model,
            "cores": hardware.cpu.physical_cores,
            "threads": hardware.cpu.logical_cores,
            "cpu_features": list(hardware.cpu.features),
            "ram_total": hardware.memory.total,
            "ram_available": hardware.memory.available,
            "cgroup_limit": hardware.memory.cgroup_limit,
            "gpus": [
                {
                    "index": gpu.index,
                    "name": gpu.name,
                    "vendor": gpu.vendor,
                    "memory_total": gpu.memory_total,
                    "memory_free": gpu.memory_free,
                    "driver": gpu.driver,
                }
                for gpu in hardware.gpus
            ],
            "gpu_status": hardware.gpu_status,
            "unified_memory": hardware.unified_memory,
        },
        "models": [_model_json(model) for model in report.models],
        "runtimes": [
            {
                "name": runtime.name,
                "path": runtime.path,
                "runs": runtime.runs,
                "version": runtime.version,
                "detail": runtime.detail,
            }
            for runtime in report.runtimes
        ],
        "providers": [
            {
                "name": provider.name,
                "url": provider.url,
                "reachable": provider.reachable,
                "latency_s": provider.latency_s,
                "models": provider.models,
                "detail": provider.detail,
            }
            for provider in report.providers
        ],
        "budget": None
        if report.budget is None
        else {
            "keep_warm": report.budget.keep_warm,
            "memory_budget_gb": report.budget.memory_budget_gb,
            "reason": report.budget.reason,
        },
        "problems": [
            {"subject": p.subject, "message": p.message, "fix": p.fix} for p in report.problems
        ],
    }


def _model_json(model: ModelFit) -> dict[str, Any]:
    configured = model.configured
    advice = model.recommendation
    shape = model.shape
    estimate = None
    if configured is not None:
        estimate = {
            "weights": configured.weights,
            "kv_cache": configured.kv_cache,
            "compute": configured.compute,
            "overhead": sum(d.overhead + d.checkpoints for d in configured.devices),
            "total": configured.total,
            "host": configured.host.total,
            "vram": configured.total - configured.host.total,
            "host_ceiling": configured.host_ceiling,
            "ctx": configured.n_ctx,
            "parallel": configured.params.slots,
        }
    recommend = None
    if advice is not None and shape is not None:
        ngl = advice.params.ngl
        recommend = {
            "ngl": shape.n_layer + 1 if ngl < 0 else ngl,
            "ctx": advice.params.ctx,
            "parallel": advice.params.slots,
            "cache_type": advice.params.cache_type_k,
            "cache_ram_mib": advice.params.cache_ram_mib,
            "max_ctx": advice.max_ctx,
            "batch_concurrency": advice.batch_concurrency,
            "fits": advice.fits,
            "flags": list(advice.flags),
            "reason": advice.reason,
            "max_ctx_by_ngl": [[point.ngl, point.max_ctx] for point in advice.curve],
        }
    projection = None
    if model.projection is not None:
        projection = {
            "host": model.projection.host_bytes,
            "device": model.projection.device_bytes,
            "host_with_repack": model.projection.host_rows_bytes,
        }
    measured = model.measured
    return {
        "name": model.name,
        "path": model.path,
        "architecture": model.architecture,
        "file_bytes": model.file_bytes,
        "estimate": estimate,
        "measured": None if measured is None else measured.measured.rss,
        "measured_vram": None if measured is None else measured.measured.vram,
        "measured_estimate": None if measured is None else measured.estimate_host,
        "fits": model.fits,
        "recommend": recommend,
        "llama_projection": projection,
    }


def format_report(report: FitReport) -> str:
    """The report as plain text."""
    hardware = report.hardware
    cpu, memory = hardware.cpu, hardware.memory
    lines = ["Hardware"]
    features = ", ".join(cpu.features) or "none detected"
    lines.append(
        f"  CPU      {cpu.model} ({cpu.physical_cores} cores, {cpu.logical_cores} threads)"
    )
    lines.append(f"  ISA      {features}")
    limit = f", container limit {_gib(memory.cgroup_limit)}" if memory.cgroup_limit else ""
    lines.append(f"  RAM      {_gib(memory.available)} free of {_gib(memory.total)}{limit}")
    for gpu in hardware.gpus:
        lines.append(
            f"  GPU {gpu.index}    {gpu.name}: {_gib(gpu.memory_free)} free of "
            f"{_gib(gpu.memory_total)}" + (f", driver {gpu.driver}" if gpu.driver else "")
        )
    if not hardware.gpus:
        lines.append(f"  GPU      none ({hardware.gpu_status or 'not found'})")
    if hardware.unified_memory:
        lines.append("  memory   unified: the GPU uses system RAM")
    lines += ["", "Runtimes"]
    for runtime in report.runtimes:
        state = "runs on this CPU" if runtime.runs else f"does NOT run: {runtime.detail}"
        lines.append(f"  {runtime.name}: {runtime.path} ({state}) {runtime.version}".rstrip())
    if not report.runtimes:
        lines.append("  no llama-server found")
    if report.providers:
        lines += ["", "Providers"]
        for provider in report.providers:
            if provider.reachable:
                latency = provider.latency_s or 0.0
                state = f"{latency * 1000:.0f} ms, {provider.models} models"
            else:
                state = f"unreachable: {provider.detail}"
            lines.append(f"  {provider.name}: {provider.url} ({state})")
    lines += ["", "Local models"]
    for model in report.models:
        lines += _model_lines(model)
    if not report.models:
        lines.append("  none found")
    if report.budget is not None:
        lines += [
            "",
            f"Keep warm: {report.budget.keep_warm} at once, memory_budget_gb = "
            f"{report.budget.memory_budget_gb:g} ({report.budget.reason})",
        ]
    lines += ["", "Problems" if report.problems else "No problems found."]
    for problem in report.problems:
        lines.append(f"  {problem.subject}: {problem.message}")
        lines.append(f"    fix: {problem.fix}")
    return "\n".join(lines)


def _model_lines(model: ModelFit) -> list[str]:
    if model.configured is None:
        return [f"  {model.name}: {model.path or 'no path'} (no estimate)"]
    configured = model.configured
    lines = [
        f"  {model.name}  {model.architecture}, {_gib(model.file_bytes)} file, "
        f"-c {configured.n_ctx} -np {configured.params.slots}"
    ]
    lines.append(
        f"    estimate {_gib(configured.total)} (weights {_gib(configured.weights)}, "
        f"KV {_gib(configured.kv_cache)}, compute {_gib(configured.compute)}); "
        f"can grow to {_gib(configured.host_ceiling)} in RAM; "
        + ("fits now" if model.fits else "does NOT fit now")
    )
    if model.measured is not None:
        measured = model.measured.measured
        error = model.measured.host_error
        said = f", error {error:+.0%}" if error is not None else ""
        lines.append(f"    measured {_gib(measured.rss)} RSS at its last run{said}")
    if model.projection is not None and model.projection.host_bytes is not None:
        lines.append(
            f"    llama-server projects {_gib(model.projection.host_bytes)} host "
            f"({_gib(model.projection.host_rows_bytes)} with its repacked weights)"
        )
    if model.recommendation is not None:
        advice = model.recommendation
        lines.append(f"    recommend {' '.join(advice.flags)}")
        lines.append(
            f"      {advice.reason}; largest context {advice.max_ctx}; "
            f"batch concurrency {advice.batch_concurrency}"
        )
    return lines


def _gib(size: int | None) -> str:
    if size is None:
        return "?"
    if size < GIB:
        return f"{size / 2**20:.0f} MiB"
    return f"{size / GIB:.1f} GiB"
