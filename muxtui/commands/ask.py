"""`muxtui ask`: one chat turn through the engine; the reply alone goes to stdout."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from muxtui.cli import Context
    from muxtui.engine.core import Engine
    from muxtui.engine.events import ChatParams, ChatStats, TurnEvent


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `ask`."""
    parser = subparsers.add_parser(
        "ask",
        help="send one prompt to a model and print the reply",
        description=(
            "Send one prompt to a model. The reply streams to stdout; errors (and stats with -v) "
            "go to stderr. The turn is saved in the history."
        ),
    )
    parser.add_argument(
        "--model",
        "-m",
        metavar="M",
        help="a [models] or [local] name, or PROVIDER:MODEL_ID (default: the last used model if "
        "it works, else a warm local one, else one that answers, else the bundled one; -v says "
        "which)",
    )
    parser.add_argument(
        "-c",
        "--continue",
        dest="continue_",
        action="store_true",
        help="continue the most recent conversation instead of starting one",
    )
    parser.add_argument(
        "--no-stream", action="store_true", help="wait for the whole reply, then print it"
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        metavar="N",
        help="stop the reply after N tokens (default: the server's limit)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print progress and stats on stderr"
    )
    parser.add_argument("prompt", metavar="PROMPT", help="the prompt text, or - to read stdin")


def run(args: argparse.Namespace, context: Context) -> int:
    """Send the prompt and stream the reply."""
    import asyncio

    from muxtui.engine.errors import UsageError
    from muxtui.engine.events import ChatParams

    if args.prompt == "-":
        # Bytes that are not UTF-8 become U+FFFD rather than a decoding error.
        prompt = sys.stdin.buffer.read().decode("utf-8", "replace")
    else:
        prompt = args.prompt
    if not prompt.strip():
        source = "stdin was empty" if args.prompt == "-" else "the prompt is empty"
        raise UsageError(f"ask: {source}; give the text to send, or - to read it from stdin")
    if args.max_tokens is not None and args.max_tokens < 1:
        raise UsageError(f"ask: --max-tokens must be 1 or more, not {args.max_tokens}")
    params = ChatParams(max_tokens=args.max_tokens, stream=not args.no_stream)
    return asyncio.run(_ask(context, prompt, args, params))


async def _ask(context: Context, prompt: str, args: argparse.Namespace, params: ChatParams) -> int:
    from muxtui.engine.core import Engine
    from muxtui.engine.errors import UsageError

    async with Engine(context.config, context.paths) as engine:
        conversation_id = None
        if args.continue_:
            latest = await engine.list_conversations(limit=1)
            if not latest:
                raise UsageError(
                    "ask: there is no conversation to continue; ask without -c to start one"
                )
            conversation_id = latest[0].id
        model = args.model or await _default_model(engine, args.verbose)
        turn = engine.run_turn(model, prompt, conversation_id=conversation_id, params=params)
        return await _print_turn(turn, args.verbose, sys.stdout, sys.stderr)


async def _default_model(engine: Engine, verbose: bool) -> str:
    from muxtui.engine.errors import UsageError

    choice = await engine.default_model()
    if choice is None:
        raise UsageError(
            "ask: no model is configured or discovered that works; add a provider to the config "
            "(`muxtui config --path`), set OPENROUTER_API_KEY, or install muxtui[local]"
        )
    if verbose:
        print(f"muxtui: model {choice.name}: {choice.reason}", file=sys.stderr, flush=True)
    return choice.name


async def _print_turn(
    turn: AsyncGenerator[TurnEvent, None], verbose: bool, out: TextIO, err: TextIO
) -> int:
    """Write the reply to `out` as it streams, progress and stats to `err` with `verbose`."""
    from muxtui.engine.events import ChatDelta, ChatFinished, ChatStatus, ContextFitted

    printed = False
    try:
        async for event in turn:
            if isinstance(event, ChatDelta):
                printed = True
                out.write(event.text)
                out.flush()
            elif isinstance(event, ChatStatus):
                if verbose:
                    print(f"muxtui: {event.message}", file=err, flush=True)
            elif isinstance(event, ContextFitted):
                if event.notice:  # always: the person should know the model saw less
                    print(f"muxtui: {event.notice}", file=err, flush=True)
            elif isinstance(event, ChatFinished):
                if not event.text.endswith("\n"):
                    out.write("\n")
                    out.flush()
                if verbose:
                    print(_stats_line(event.stats, event.finish_reason), file=err, flush=True)
    except BaseException:
        if printed:  # the error line starts on a line of its own
            out.write("\n")
            out.flush()
        raise
    return 0


def _stats_line(stats: ChatStats, finish_reason: str) -> str:
    ended = "" if finish_reason == "stop" else f" · ended: {finish_reason}"
    return (
        f"muxtui: {stats.model} via {stats.provider} · first token {stats.ttft_s * 1000:.0f} ms · "
        f"{stats.tokens_per_s:.1f} tok/s · {stats.prompt_tokens} prompt + "
        f"{stats.completion_tokens} completion tokens · {stats.total_s:.2f} s{ended}"
    )
