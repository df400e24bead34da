"""Where serve's added time goes: the same minimal aiohttp.web proxy, forwarding upstream with
a pooled httpx client (what serve uses) or with aiohttp's own client.

Each proxy is a subprocess in front of tests/fake_server.py (64-token replies); the figures are
measured as bench/serve.py measures them (same client, interleaved with direct requests).

    python bench/serve_upstream_client.py [--requests 300] [--rounds 3]

Run as `python bench/serve_upstream_client.py --proxy httpx|aiohttp PORT UPSTREAM_URL` it is
one of the proxies.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve_support as bench  # the upstream, the client and the figures of bench/serve.py

CONNECTIONS = 10  # muxtui's default [network] max_connections
JSON = {"content-type": "application/json"}


async def run_proxy(kind: str, port: int, upstream: str) -> None:
    """Serve POST /v1/chat/completions by forwarding to `upstream` until SIGTERM/SIGINT."""
    import aiohttp
    import httpx
    from aiohttp import web

    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    client = httpx.AsyncClient(limits=limits, timeout=60)
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    session = aiohttp.ClientSession(connector=connector, auto_decompress=False)

    async def with_httpx(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if b'"stream": true' not in body:
            reply = await client.post(upstream, content=body, headers=JSON)
            return web.Response(body=reply.content, status=reply.status_code, headers=JSON)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        async with client.stream("POST", upstream, content=body, headers=JSON) as upstream_reply:
            await response.prepare(request)
            async for chunk in upstream_reply.aiter_raw():
                await response.write(chunk)
        await response.write_eof()
        return response

    async def with_aiohttp(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with session.post(upstream, data=body, headers=JSON) as upstream_reply:
            if b'"stream": true' not in body:
                data = await upstream_reply.read()
                return web.Response(body=data, status=upstream_reply.status, headers=JSON)
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            async for chunk in upstream_reply.content.iter_any():
                await response.write(chunk)
        await response.write_eof()
        return response

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", with_httpx if kind == "httpx" else with_aiohttp)
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await client.aclose()
    await session.close()


async def measure(args: argparse.Namespace, workdir: Path) -> None:
    upstream_port = bench.free_port()
    children = [bench.start_upstream(upstream_port, workdir)]
    direct = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
    proxies: dict[str, str] = {}
    try:
        for kind in ("httpx", "aiohttp"):
            port = bench.free_port()
            command = [sys.executable, __file__, "--proxy", kind, str(port), direct]
            children.append(subprocess.Popen(command))
            bench.wait_for(
                lambda port=port: bench.http_ok(port, "/health"), 20, f"{kind} proxy", None
            )
            proxies[kind] = f"http://127.0.0.1:{port}/v1/chat/completions"
        whole = bench.body("fake-model", stream=False)
        streamed = bench.body("fake-model", stream=True)
        async with bench.new_session() as session:

            async def one(url: str) -> None:
                await bench.non_streamed(session, url, whole)

            async def stream(url: str) -> None:
                if await bench.streamed(session, url, streamed) != bench.TOKENS:
                    raise RuntimeError(f"{url}: tokens missing")

            for _ in range(30):  # warm every pool
                for url in (direct, *proxies.values()):
                    await one(url)
                    await stream(url)
            print(
                "| Upstream client | Non-streamed, added | 64-token stream, added | c16 / direct |"
            )
            print("|---|---|---|---|")
            for kind, url in proxies.items():
                d, s, _ = await bench.paired_latency(one, direct, url, args.requests)
                sd, ss, _ = await bench.paired_latency(stream, direct, url, args.requests)
                ratios = []
                for _ in range(args.rounds):
                    rate_direct = await bench.throughput(session, direct, whole, 1000, 16)
                    rate_proxy = await bench.throughput(session, url, whole, 1000, 16)
                    ratios.append(rate_proxy / rate_direct)
                print(
                    f"| {kind} | {(s - d) * 1e3:.2f} ms | {(ss - sd) * 1e3:.2f} ms | "
                    f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f}) |",
                    flush=True,
                )
    finally:
        for child in reversed(children):
            bench.stop(child, signal.SIGTERM)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="pairs per latency figure")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds")
    parser.add_argument("--proxy", nargs=3, metavar=("KIND", "PORT", "UPSTREAM"))
    args = parser.parse_args()
    if args.proxy:
        kind, port, upstream = args.proxy
        asyncio.run(run_proxy(kind, int(port), upstream))
        return 0
    with tempfile.TemporaryDirectory(prefix="muxtui-bench-proxy-") as tmp:
        asyncio.run(measure(args, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
