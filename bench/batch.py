"""Batch benchmark: `Engine.run_batch` against raw httpx, on fake servers in their own processes.

Scenarios, each bounded in time, each with its baseline measured in the same run:

  latency     200 items at 100 ms a reply, concurrency 16: wall time against the ideal 1.25 s
              (target <= 1.05x), raw httpx doing the same, and the connections the batch opened
              under the default [network] max_connections = 10 (target: 16).
  throughput  20,000 items per client, no latency, concurrency 16, in rounds with the clients
              in rotating order: items/s against raw httpx posting the same bodies and parsing
              the replies, writing nothing (target >= 0.8x), for each fsync policy: never,
              every 1 s (the default), before each item counts (group commit). The difference
              is what the ledger's durability costs.
  memory      peak RSS of a batch process over a 1,000-line and a 100,000-line input, each in
              a fresh process (target: growth <= 20 MB).
  seeds       the seeds' batch: 100 prompts, 4 workers (here: the 4 slots the server reports),
              their per-prompt latency scaled down by --seed-scale; against the ideal and their
              75 s target (their sequential run took 300 s).

    python bench/batch.py [--only latency,throughput,memory,seeds] [--items 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.chat_overhead import free_port, pin, start_server  # noqa: E402
from muxtui.engine.batch.runner import BatchSpec, BatchSummary  # noqa: E402
from muxtui.engine.config import Config, ModelConfig, NetworkConfig, ProviderConfig  # noqa: E402
from muxtui.engine.core import Engine  # noqa: E402
from muxtui.engine.paths import Paths  # noqa: E402

TOKENS = 16
MAX_RUN_S = 300.0  # no single run goes on longer than this
SEED_LATENCY_S = 3.0  # the seeds' per-prompt time: 100 prompts took 300 s sequentially
SEED_TARGET_S = 75.0


def engine_for(port: int, data: Path, network: NetworkConfig | None = None) -> Engine:
    """An engine with one provider on the fake server and nothing discovered."""
    config = Config(
        providers={"fake": ProviderConfig(base_url=f"http://127.0.0.1:{port}/v1")},
        models={"bench": ModelConfig(provider="fake", id="fake-model")},
        network=network or NetworkConfig(discovery=False),
    )
    paths = Paths(data / "config.toml", data / "data", data / "cache", data / "log")
    return Engine(config, paths, discover=False)


def write_input(path: Path, count: int) -> Path:
    """`count` prompt lines."""
    with path.open("w", encoding="utf-8") as handle:
        for n in range(count):
            handle.write(json.dumps({"custom_id": f"q{n}", "prompt": f"question {n}"}) + "\n")
    return path


def fresh(directory: Path) -> Path:
    """An empty directory."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


async def timed_batch(engine: Engine, spec: BatchSpec) -> tuple[float, BatchSummary]:
    """Wall seconds of one run, bounded by MAX_RUN_S."""
    started = time.perf_counter()
    summary = await asyncio.wait_for(engine.run_batch(spec), MAX_RUN_S)
    return time.perf_counter() - started, summary


async def raw_httpx(port: int, count: int, concurrency: int) -> float:
    """Wall seconds for raw httpx to post `count` bodies `concurrency` at a time, parsing each."""
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    issued = 0
    deadline = time.monotonic() + MAX_RUN_S
    async with httpx.AsyncClient(limits=limits, trust_env=False, timeout=60) as client:

        async def worker() -> None:
            nonlocal issued
            while issued < count and time.monotonic() < deadline:
                n = issued
                issued += 1
                body = {
                    "model": "fake-model",
                    "messages": [{"role": "user", "content": f"question {n}"}],
                }
                response = await client.post(url, json=body)
                assert response.json()["choices"]

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def connections_to(port: int) -> int:
    """Established TCP connections from this process to the server's port."""
    return sum(
        1
        for conn in psutil.Process().net_connections(kind="tcp")
        if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED
    )


async def latency(work: Path, rounds: int) -> list[str]:
    port = free_port()
    server = start_server(port, TOKENS, "--latency", "0.1")
    ideal = 200 * 0.1 / 16
    batch_walls, raw_walls, opened = [], [], []
    try:
        for number in range(rounds):
            folder = fresh(work / f"latency-{number}")
            source = write_input(folder / "in.jsonl", 200)
            async with engine_for(port, folder) as engine:
                wall, summary = await timed_batch(engine, BatchSpec(source, concurrency=16))
                assert summary.progress.succeeded == 200
                opened.append(connections_to(port))
            batch_walls.append(wall)
            raw_walls.append(await raw_httpx(port, 200, 16))
    finally:
        server.terminate()
        server.wait(timeout=10)
    batch_wall, raw_wall = statistics.median(batch_walls), statistics.median(raw_walls)
    return [
        f"[latency] 200 items at 100 ms, concurrency 16, [network] max_connections = 10, "
        f"median of {rounds}",
        f"  batch   {batch_wall:6.3f} s = {batch_wall / ideal:.3f}x the ideal {ideal:.2f} s"
        "  target <= 1.05",
        f"  raw     {raw_wall:6.3f} s = {raw_wall / ideal:.3f}x the ideal",
        f"  connections the batch opened: {sorted(set(opened))}  target 16",
    ]


async def throughput(work: Path, count: int, rounds: int) -> list[str]:
    """Rounds of count/rounds items per client, the clients in rotating order; per-round ratios.

    A busy machine drifts by more than the difference measured, so each round compares the
    clients side by side, as bench/chat_overhead.py does.
    """
    port = free_port()
    server = start_server(port, TOKENS)
    every_cpu = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    pin(0, 0)
    pin(server.pid, 1)
    size = count // rounds
    policies = {"fsync every 1 s (default)": 1.0, "never fsync": None, "fsync each item": 0.0}
    rates: dict[str, list[float]] = {"raw": [], **{label: [] for label in policies}}
    cpu: dict[str, list[float]] = {name: [] for name in rates}
    try:
        warm = fresh(work / "warm-up")  # first-call costs (imports, pool) stay out of the figures
        async with engine_for(port, warm) as engine:
            await engine.run_batch(BatchSpec(write_input(warm / "in.jsonl", 200), concurrency=16))
        for number in range(rounds):
            names = list(rates)
            names = names[number % len(names) :] + names[: number % len(names)]
            for name in names:
                cpu_before, started = time.process_time(), time.perf_counter()
                if name == "raw":
                    await raw_httpx(port, size, 16)
                else:
                    folder = fresh(work / "throughput")
                    source = write_input(folder / "in.jsonl", size)
                    cpu_before, started = time.process_time(), time.perf_counter()
                    async with engine_for(port, folder) as engine:
                        spec = BatchSpec(source, concurrency=16, sync_every_s=policies[name])
                        _, summary = await timed_batch(engine, spec)
                    assert summary.progress.succeeded == size
                rates[name].append(size / (time.perf_counter() - started))
                cpu[name].append((time.process_time() - cpu_before) / size * 1e6)
    finally:
        server.terminate()
        server.wait(timeout=10)
        if every_cpu:
            os.sched_setaffinity(0, every_cpu)  # later scenarios' processes inherit it
    lines = [
        f"[throughput] {rounds} rounds of {size} items per client ({rounds * size} each), "
        "no latency, concurrency 16, client on CPU 0 and server on CPU 1; per-round "
        "ratio to raw httpx: median [quartiles]",
        f"  raw httpx                    {statistics.median(rates['raw']):7.1f} items/s, "
        f"client CPU {statistics.median(cpu['raw']):6.0f} us/item",
    ]
    for label in policies:
        ratios = [b / r for b, r in zip(rates[label], rates["raw"], strict=True)]
        lines.append(
            f"  batch, {label:27s} {statistics.median(rates[label]):7.1f} items/s, "
            f"client CPU {statistics.median(cpu[label]):6.0f} us/item, "
            f"ratio {_spread(ratios)}  target >= 0.8"
        )
    return lines


def _spread(values: list[float]) -> str:
    q1, median, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return f"{median:.3f} [{q1:.3f}..{q3:.3f}]"


def memory(work: Path, sizes: tuple[int, ...]) -> list[str]:
    port = free_port()
    server = start_server(port, 4)
    peaks = {}
    try:
        for size in sizes:
            folder = fresh(work / f"memory-{size}")
            source = write_input(folder / "in.jsonl", size)
            child = subprocess.run(
                [sys.executable, __file__, "--memory-child", str(source), "--port", str(port)],
                capture_output=True,
                text=True,
                timeout=MAX_RUN_S * 2,
                check=True,
            )
            peaks[size] = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        server.terminate()
        server.wait(timeout=10)
    small, large = (peaks[size] for size in sizes)
    growth = (large["peak_kib"] - small["peak_kib"]) / 1024
    return [
        "[memory] peak RSS of a batch process (fresh process each, concurrency 32)",
        *(
            f"  {size:7d} lines: before {p['before_kib'] / 1024:6.1f} MiB, peak "
            f"{p['peak_kib'] / 1024:6.1f} MiB, {p['seconds']:.1f} s"
            for size, p in peaks.items()
        ),
        f"  growth from {sizes[0]} to {sizes[1]} lines: {growth:.1f} MiB  target <= 20 MB",
    ]


async def memory_child(source: Path, port: int) -> None:
    """Run one batch in this process and print its peak RSS as JSON (for `memory`)."""
    async with engine_for(port, source.parent) as engine:
        before = psutil.Process().memory_info().rss // 1024
        started = time.perf_counter()
        summary = await engine.run_batch(BatchSpec(source, concurrency=32))
        assert summary.progress.failed == 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    seconds = time.perf_counter() - started
    print(json.dumps({"before_kib": before, "peak_kib": peak, "seconds": seconds}))


async def seeds(work: Path, scale: float) -> list[str]:
    latency_s = SEED_LATENCY_S / scale
    port = free_port()
    server = start_server(port, TOKENS, "--latency", str(latency_s), "--total-slots", "4")
    try:
        folder = fresh(work / "seeds")
        source = write_input(folder / "in.jsonl", 100)
        async with engine_for(port, folder) as engine:
            wall, summary = await timed_batch(engine, BatchSpec(source))
    finally:
        server.terminate()
        server.wait(timeout=10)
    ideal = 100 * latency_s / summary.progress.concurrency
    ratio = wall / ideal
    projected = ratio * 100 * SEED_LATENCY_S / summary.progress.concurrency
    return [
        f"[seeds] 100 prompts at {latency_s * 1000:.0f} ms (the seeds' {SEED_LATENCY_S:.0f} s "
        f"/ {scale:g}), concurrency {summary.progress.concurrency} from the server's slots",
        f"  {wall:.3f} s = {ratio:.3f}x the ideal {ideal:.2f} s; at {SEED_LATENCY_S:.0f} s a "
        f"prompt that is {projected:.1f} s against the seeds' target "
        f"{SEED_TARGET_S:.0f} s (their sequential run: 300 s)",
    ]


async def bench(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="muxtui-bench-batch-"))
    wanted = set(args.only.split(","))
    report = [
        f"Batch benchmark: python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"{TOKENS} tokens a reply, fake server in its own process"
    ]
    try:
        if "latency" in wanted:
            report += await latency(work, args.rounds)
        if "throughput" in wanted:
            report += await throughput(work, args.items, args.throughput_rounds)
        if "memory" in wanted:
            report += memory(work, (1_000, args.memory_lines))
        if "seeds" in wanted:
            report += await seeds(work, args.seed_scale)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(report))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="latency,throughput,memory,seeds")
    parser.add_argument("--items", type=int, default=20_000, help="throughput: items")
    parser.add_argument("--rounds", type=int, default=3, help="latency: runs of each client")
    parser.add_argument("--throughput-rounds", type=int, default=5)
    parser.add_argument("--memory-lines", type=int, default=100_000)
    parser.add_argument("--seed-scale", type=float, default=10.0, help="seeds: latency divisor")
    parser.add_argument("--memory-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        asyncio.run(memory_child(args.memory_child, args.port))
        return 0
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
