"""`muxtui monitor`: samples as they are taken, one compact line (or JSON object) each."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from muxtui.cli import Context
    from muxtui.engine.monitor.samples import Sample

GIB = 2**30
MIB = 2**20


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `monitor`."""
    parser = subparsers.add_parser(
        "monitor",
        help="live RAM, swap, CPU, model servers and GPUs, one sample per line",
        description=(
            "Sample system memory, swap, CPU, muxtui's own memory, each local model server's "
            "process tree and every NVIDIA GPU, with alerts. Servers another muxtui started "
            "are shown when their command line names a model file of this config's [local] "
            "entries."
        ),
    )
    parser.add_argument(
        "--interval", metavar="S", help="seconds between samples (default: [monitor] interval)"
    )
    parser.add_argument("--count", metavar="N", help="stop after N samples (default: never)")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object per sample (sizes in bytes)"
    )


def run(args: argparse.Namespace, context: Context) -> int:
    """Print samples until `--count` is reached or Ctrl-C."""
    import asyncio

    from muxtui.engine.errors import UsageError

    if args.interval is not None:
        interval = _number(args.interval)
        if interval is None or interval <= 0:
            raise UsageError(
                f"monitor: --interval must be a number of seconds above 0, not {args.interval!r}"
            )
        context.config.monitor.interval = interval
    count = None
    if args.count is not None:
        count = int(args.count) if args.count.strip().isdigit() else 0
        if count < 1:
            raise UsageError(
                f"monitor: --count must be a whole number, 1 or more, not {args.count!r}"
            )
    asyncio.run(_watch(context, count, args.json))
    return 0


async def _watch(context: Context, count: int | None, as_json: bool) -> None:
    from muxtui.engine.core import Engine
    from muxtui.engine.monitor.samples import sample_to_json

    engine = Engine(context.config, context.paths, discover=False)
    try:
        taken = 0
        async for sample in engine.samples():
            if as_json:
                print(json.dumps(sample_to_json(sample)), flush=True)
            else:
                if taken == 0:
                    for line in (sample.gpu_status, *sample.notes):
                        if line:
                            print(f"# {line}", flush=True)
                print(format_line(sample), flush=True)
            taken += 1
            if count is not None and taken >= count:
                break
    finally:
        await engine.aclose()
    sys.stdout.flush()


def format_line(sample: Sample) -> str:
    """One sample as a compact line: system, then each server, each GPU and each alert."""
    clock = time.strftime("%H:%M:%S", time.localtime(sample.ts))
    parts = [
        f"{clock}  RAM {_gib(sample.ram_used)}/{_gib(sample.ram_total)} GiB "
        f"(avail {_gib(sample.ram_available)})",
        f"swap {_gib(sample.swap_used)}/{_gib(sample.swap_total)} GiB"
        + (f" in {sample.swap_in_per_s / 1e6:.1f} MB/s" if sample.swap_in_per_s >= 1e5 else ""),
        f"CPU {sample.cpu_percent:.0f}%",
        f"muxtui {sample.process_rss / MIB:.0f} MiB",
    ]
    for server in sample.servers:
        figures = [f"{_size(server.rss)} RSS", f"{_size(server.vram)} VRAM"]
        figures.append(f"{server.cpu_percent:.0f}% CPU")
        if server.tokens_per_s is not None:
            figures.append(f"{server.tokens_per_s:.1f} tok/s")
        if server.kv_used is not None:
            figures.append(f"KV {100 * server.kv_used:.0f}%")
        where = " (other muxtui)" if server.foreign else ""
        parts.append(f"{server.name}{where}: " + ", ".join(figures))
    for gpu in sample.gpus:
        figures = [f"GPU{gpu.index}"]
        if gpu.util_percent is not None:
            figures.append(f"{gpu.util_percent:.0f}%")
        figures.append(f"{_gib(gpu.memory_used)}/{_gib(gpu.memory_total)} GiB")
        if gpu.temperature_c is not None:
            figures.append(f"{gpu.temperature_c:.0f}°C")
        if gpu.power_w is not None:
            figures.append(f"{gpu.power_w:.0f} W")
        parts.append(" ".join(figures))
    parts.extend(f"! {alert.subject}: {alert.message}" for alert in sample.alerts)
    return "  |  ".join(parts)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _gib(count: int) -> str:
    return f"{count / GIB:.1f}"


def _size(count: int) -> str:
    return f"{count / GIB:.1f} GiB" if count >= GIB else f"{count / MIB:.0f} MiB"
