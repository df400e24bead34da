"""Chat overhead benchmark: the engine against raw `httpx.AsyncClient` on one loopback server.

The fake server (tests/fake_server.py) runs as a subprocess so it never competes with the
client for the GIL. Both clients stream the same replies from it: raw httpx reads the SSE lines
and pulls the text out of each JSON chunk (the least any client must do); the engine goes
through `Engine.chat` (routing, pooled client, retry bookkeeping, SSE decoding, stats).
Rounds alternate raw and engine so drift on a busy machine hits both alike; each figure is the
median over rounds.

    python bench/chat_overhead.py [--rounds 15] [--requests 60] [--tokens 64] [--concurrency 16]

Reported: requests per second (engine / raw), time to first token (median engine - raw, ms)
and client CPU time per streamed token (engine / raw), for sequential and concurrent runs.

With `--non-streamed` both clients ask for whole replies: raw httpx posts the body and parses
the JSON reply; the engine goes through `Engine.forward_chat` (the batch runner's hot path:
routing, pooled client, retry bookkeeping, reply checks) or, with `--engine-path chat`, through
`Engine.chat` with `stream=False`. "TTFT" is then the whole request's latency and "CPU per
token" the client CPU per request. (That a batch of 16 opens 16 connections is measured by
bench/batch.py, against a server slow enough to keep 16 requests in flight.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from muxtui.engine.config import Config, ModelConfig, NetworkConfig, ProviderConfig  # noqa: E402
from muxtui.engine.core import Engine  # noqa: E402
from muxtui.engine.events import ChatDelta, ChatFinished, ChatMessage, ChatParams  # noqa: E402
from muxtui.engine.paths import Paths  # noqa: E402
from muxtui.engine.pool import KEEPALIVE_EXPIRY_S  # noqa: E402

MESSAGES = [ChatMessage("user", "Say something, anything at all.")]
MAX_SECONDS_PER_RUN = 20.0  # a bound on each run besides its request count


@dataclass(frozen=True)
class RunResult:
    """One run of one client: throughput, time to first token and CPU per token."""

    requests: int
    tokens: int
    wall_s: float
    cpu_s: float
    ttft_s: list[float]

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.wall_s

    @property
    def cpu_per_token_us(self) -> float:
        return self.cpu_s / max(1, self.tokens) * 1e6


Turn = Callable[[], Awaitable[tuple[float, int]]]  # returns (ttft seconds, tokens)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(port: int, tokens: int, *extra: str) -> subprocess.Popen[bytes]:
    """The fake server in its own process (with `extra` arguments), once it answers /health."""
    script = REPO_ROOT / "tests" / "fake_server.py"
    process = subprocess.Popen(
        [sys.executable, str(script), "--port", str(port), "--tokens", str(tokens), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the fake server did not start")


def raw_turn(client: httpx.AsyncClient, url: str) -> Turn:
    """One streamed reply through raw httpx: SSE lines, JSON per chunk, text collected."""
    body = {
        "model": "fake-model",
        "messages": [{"role": m.role, "content": m.content} for m in MESSAGES],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    loads = json.loads

    async def turn() -> tuple[float, int]:
        started = time.perf_counter()
        first = 0.0
        parts: list[str] = []
        async with client.stream("POST", url, json=body) as response:
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                choices = loads(line[6:]).get("choices")
                if choices:
                    content = choices[0].get("delta", {}).get("content")
                    if content:
                        if not parts:
                            first = time.perf_counter()
                        parts.append(content)
        return first - started, len(parts)

    return turn


def raw_post_turn(client: httpx.AsyncClient, url: str) -> Turn:
    """One whole reply through raw httpx: post the body, parse the JSON, take the text."""
    body = {
        "model": "fake-model",
        "messages": [{"role": m.role, "content": m.content} for m in MESSAGES],
    }

    async def turn() -> tuple[float, int]:
        started = time.perf_counter()
        response = await client.post(url, json=body)
        text = response.json()["choices"][0]["message"]["content"]
        assert text
        return time.perf_counter() - started, 1

    return turn


def engine_forward_turn(engine: Engine) -> Turn:
    """One whole reply through `Engine.forward_chat`, the batch runner's path."""
    body = {
        "model": "bench",
        "messages": [{"role": m.role, "content": m.content} for m in MESSAGES],
    }

    async def turn() -> tuple[float, int]:
        started = time.perf_counter()
        reply = await engine.forward_chat("bench", body)
        text = reply.parsed["choices"][0]["message"]["content"]
        assert text
        return time.perf_counter() - started, 1

    return turn


def engine_whole_chat_turn(engine: Engine) -> Turn:
    """One whole reply through `Engine.chat` with `stream=False`."""
    params = ChatParams(stream=False)

    async def turn() -> tuple[float, int]:
        started = time.perf_counter()
        async for event in engine.chat("bench", MESSAGES, params):
            if isinstance(event, ChatFinished):
                assert event.text
        return time.perf_counter() - started, 1

    return turn


def engine_turn(engine: Engine) -> Turn:
    """One streamed reply through `Engine.chat`."""

    async def turn() -> tuple[float, int]:
        started = time.perf_counter()
        first = 0.0
        tokens = 0
        async for event in engine.chat("bench", MESSAGES):
            if isinstance(event, ChatDelta):
                if not tokens:
                    first = time.perf_counter()
                tokens += 1
        return first - started, tokens

    return turn


async def run(turn: Turn, requests: int, concurrency: int) -> RunResult:
    """`requests` turns with `concurrency` in flight, bounded by MAX_SECONDS_PER_RUN."""
    ttfts: list[float] = []
    tokens = 0
    issued = 0
    deadline = time.monotonic() + MAX_SECONDS_PER_RUN

    async def worker() -> None:
        nonlocal tokens, issued
        while issued < requests and time.monotonic() < deadline:
            issued += 1
            ttft, count = await turn()
            ttfts.append(ttft)
            tokens += count

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return RunResult(len(ttfts), tokens, wall, cpu, ttfts)


def pick_clients(
    args: argparse.Namespace,
    client: httpx.AsyncClient,
    twin: httpx.AsyncClient,
    engine: Engine,
    url: str,
) -> dict[str, Turn]:
    """The raw client and the one compared with it, for the mode asked for."""
    if not args.non_streamed:
        return {
            "raw": raw_turn(client, url),
            "engine": raw_turn(twin, url) if args.control else engine_turn(engine),
        }
    if args.control:
        compared = raw_post_turn(twin, url)
    elif args.engine_path == "chat":
        compared = engine_whole_chat_turn(engine)
    else:
        compared = engine_forward_turn(engine)
    return {"raw": raw_post_turn(client, url), "engine": compared}


def pin(pid: int, cpu: int) -> None:
    """Keep a process on one CPU so client and server never trade places mid-run."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > cpu:
        os.sched_setaffinity(pid, {cpu})


async def bench(args: argparse.Namespace) -> int:
    port = free_port()
    server = start_server(port, args.tokens)
    if args.pin:
        pin(0, 0)
        pin(server.pid, 1)
    base_url = f"http://127.0.0.1:{port}/v1"
    network = NetworkConfig(max_connections=args.concurrency, max_keepalive=args.concurrency)
    config = Config(
        providers={"fake": ProviderConfig(base_url=base_url)},
        models={"bench": ModelConfig(provider="fake", id="fake-model")},
        network=network,
    )
    data = Path(tempfile.mkdtemp(prefix="muxtui-bench-"))
    paths = Paths(data / "config.toml", data / "data", data / "cache", data / "log")
    # The raw client gets the engine's pool settings, so only the code path differs.
    limits = httpx.Limits(
        max_connections=args.concurrency,
        max_keepalive_connections=args.concurrency,
        keepalive_expiry=KEEPALIVE_EXPIRY_S,
    )
    timeout = httpx.Timeout(network.read_timeout, connect=network.connect_timeout)
    what = "streamed"
    if args.non_streamed:
        what = f"non-streamed, engine path: {args.engine_path}"
    report = [
        f"Chat overhead ({what}): engine vs raw httpx, same loopback server, same run",
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.tokens} tokens per reply, "
        f"{args.rounds} rounds of {args.requests} requests per client and mode"
        + (", client and server pinned to CPUs 0 and 1" if args.pin else ""),
    ]
    if args.control:
        report.append("CONTROL RUN: the 'engine' column is a second raw httpx client (noise floor)")
    try:
        async with (
            httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client,
            httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as twin,
            Engine(config, paths, discover=False) as engine,
        ):
            url = f"{base_url}/chat/completions"
            clients = pick_clients(args, client, twin, engine, url)
            modes = [("sequential", 1), (f"{args.concurrency}-way concurrent", args.concurrency)]
            modes = [mode for mode in modes if args.only in ("", mode[0].split()[-1])]
            for label, concurrency in modes:
                for turn in clients.values():  # warm-up: connections, first-call costs
                    await run(turn, concurrency * 4, concurrency)
                results: dict[str, list[RunResult]] = {"raw": [], "engine": []}
                for round_number in range(args.rounds):
                    # Short runs, alternating which goes first, so load from elsewhere on the
                    # machine falls on both clients alike; ratios are taken per round.
                    order = list(clients) if round_number % 2 == 0 else list(clients)[::-1]
                    for name in order:
                        results[name].append(await run(clients[name], args.requests, concurrency))
                report += summarise(label, results)
    finally:
        server.terminate()
        server.wait(timeout=10)
    print("\n".join(report))
    return 0


def spread(values: list[float], fmt: str) -> str:
    """Median and interquartile range of per-round figures, e.g. `0.98 [0.95..1.01]`."""
    q1, median, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return f"{median:{fmt}} [{q1:{fmt}}..{q3:{fmt}}]"


def summarise(label: str, results: dict[str, list[RunResult]]) -> list[str]:
    """Per-round engine/raw ratios (median and quartiles), with each client's medians."""
    raw, eng = results["raw"], results["engine"]
    pairs = list(zip(raw, eng, strict=True))
    rps = [e.requests_per_s / r.requests_per_s for r, e in pairs]
    cpu = [e.cpu_per_token_us / r.cpu_per_token_us for r, e in pairs]
    ttft = [(statistics.median(e.ttft_s) - statistics.median(r.ttft_s)) * 1000 for r, e in pairs]
    raw_ttft = statistics.median(t for r in raw for t in r.ttft_s) * 1000
    eng_ttft = statistics.median(t for e in eng for t in e.ttft_s) * 1000
    raw_rps = statistics.median(r.requests_per_s for r in raw)
    eng_rps = statistics.median(e.requests_per_s for e in eng)
    raw_cpu = statistics.median(r.cpu_per_token_us for r in raw)
    eng_cpu = statistics.median(e.cpu_per_token_us for e in eng)
    return [
        f"[{label}] per-round engine/raw: median [quartiles]",
        f"  requests/s     raw {raw_rps:7.1f}     engine {eng_rps:7.1f}     "
        f"ratio    {spread(rps, '.3f')}  target >= 0.95",
        f"  TTFT median    raw {raw_ttft:7.3f} ms  engine {eng_ttft:7.3f} ms  "
        f"overhead {spread(ttft, '+.3f')} ms  target <= 1 ms",
        f"  CPU per token  raw {raw_cpu:7.1f} us  engine {eng_cpu:7.1f} us  "
        f"ratio    {spread(cpu, '.3f')}  target <= 1.2",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=60, help="requests per client and round")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per reply")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin CPUs")
    parser.add_argument("--only", choices=("sequential", "concurrent"), default="")
    parser.add_argument(
        "--control", action="store_true", help="raw httpx against raw httpx: the noise floor"
    )
    parser.add_argument(
        "--non-streamed", action="store_true", help="whole replies instead of streams"
    )
    parser.add_argument(
        "--engine-path",
        choices=("forward", "chat"),
        default="forward",
        help="non-streamed: Engine.forward_chat (the batch path) or Engine.chat(stream=False)",
    )
    return asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
