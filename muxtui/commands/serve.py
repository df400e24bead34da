"""`muxtui serve`: the OpenAI-compatible endpoint in front of the engine, until Ctrl-C."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from muxtui.cli import Context
    from muxtui.engine.serve.server import Server


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `serve`."""
    parser = subparsers.add_parser(
        "serve",
        help="an OpenAI-compatible endpoint in front of muxtui's models and warm servers",
        description=(
            "Serve /v1/chat/completions (streamed and not), /v1/models, /health and /metrics "
            "over muxtui's routing, fallbacks, retries and warm local servers. Other muxtui "
            "processes on this machine use it instead of starting their own servers. Binds "
            "127.0.0.1 unless told otherwise; any other host needs [serve] api_key_env."
        ),
    )
    parser.add_argument("--host", metavar="H", help="address to listen on (default: [serve] host)")
    parser.add_argument("--port", metavar="P", help="port to listen on (default: [serve] port)")


def run(args: argparse.Namespace, context: Context) -> int:
    """Serve until SIGINT or SIGTERM."""
    import asyncio

    from muxtui.engine.errors import UsageError
    from muxtui.engine.serve.auth import server_key
    from muxtui.engine.serve.state import live_state

    settings = context.config.serve
    host = args.host if args.host is not None else settings.host
    port = settings.port
    if args.port is not None:
        try:
            port = int(args.port)
        except ValueError:
            port = -1
        if not 0 <= port <= 65535:
            raise UsageError(f"serve: --port must be a port number 0-65535, not {args.port!r}")
    key = server_key(host, settings.api_key_env)
    running = live_state(context.paths.serve_state_file)
    if running is not None:
        raise UsageError(
            f"serve: already running at {running['url']} (pid {running['pid']}); "
            "use it, or stop it first"
        )
    asyncio.run(_serve(context, host, port, key))
    return 0


async def _serve(context: Context, host: str, port: int, key: str) -> None:
    import asyncio
    import signal

    from muxtui.engine.core import Engine
    from muxtui.engine.serve.server import serve_until

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    def ready(server: Server) -> None:
        print(
            f"muxtui serve: listening on {server.url} (Ctrl-C stops)", file=sys.stderr, flush=True
        )

    async with Engine(context.config, context.paths) as engine:
        await serve_until(
            engine,
            host,
            port,
            stop,
            key=key,
            api_key_env=context.config.serve.api_key_env,
            on_ready=ready,
        )
