"""`muxtui ask`: one chat turn through the engine; the reply alone goes to stdout."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from muxtui.cli import Context
    from muxtui.engine.core import Engine
    from muxtui.engine.events import ChatParams, ChatStats


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

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not prompt.strip():
        source = "stdin was empty" if args.prompt == "-" else "the prompt is empty"
        raise UsageError(f"ask: {source}; give the text to send, or - to read it from stdin")
    if args.max_tokens is not None and args.max_tokens < 1:
        raise UsageError(f"ask: --max-tokens must be 1 or more, not {args.max_tokens}")
    params = ChatParams(max_tokens=args.max_tokens, stream=not args.no_stream)
    return asyncio.run(_ask(context, prompt, args.model, params, args.verbose))


async def _ask(
    context: Context, prompt: str, model: str | None, params: ChatParams, verbose: bool
) -> int:
    from muxtui.engine.core import Engine

    async with Engine(context.config, context.paths) as engine:
        chosen = model or await _default_model(engine, verbose)
        return await _turn(engine, chosen, prompt, params, verbose, sys.stdout, sys.stderr)


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


async def _turn(
    engine: Engine,
    model: str,
    prompt: str,
    params: ChatParams,
    verbose: bool,
    out: TextIO,
    err: TextIO,
) -> int:
    import asyncio

    from muxtui.engine.errors import MuxtuiError, StreamInterruptedError
    from muxtui.engine.events import ChatDelta, ChatFinished, ChatMessage, ChatStatus
    from muxtui.engine.history import conversation_title

    await engine.check_model(model)  # an unknown name leaves nothing in the history
    history = engine.history
    conversation = await history.new_conversation(title=conversation_title(prompt), model=model)
    await history.add_message(conversation.id, "user", prompt)
    parts: list[str] = []
    try:
        async for event in engine.chat(model, [ChatMessage("user", prompt)], params):
            if isinstance(event, ChatDelta):
                parts.append(event.text)
                out.write(event.text)
                out.flush()
            elif isinstance(event, ChatStatus):
                if verbose:
                    print(f"muxtui: {event.message}", file=err, flush=True)
            elif isinstance(event, ChatFinished):
                if not event.text.endswith("\n"):
                    out.write("\n")
                    out.flush()
                await history.add_message(
                    conversation.id, "assistant", event.text, model=model, stats=event.stats
                )
                if verbose:
                    print(_stats_line(event.stats, event.finish_reason), file=err, flush=True)
    except MuxtuiError as exc:
        if parts:
            out.write("\n")
            out.flush()
        partial = exc.partial_text if isinstance(exc, StreamInterruptedError) else "".join(parts)
        await history.add_message(
            conversation.id, "assistant", partial, model=model, status="error", error=str(exc)
        )
        raise
    except (asyncio.CancelledError, KeyboardInterrupt):
        await asyncio.shield(
            history.add_message(
                conversation.id, "assistant", "".join(parts), model=model, status="stopped"
            )
        )
        raise
    return 0


def _stats_line(stats: ChatStats, finish_reason: str) -> str:
    ended = "" if finish_reason == "stop" else f" · ended: {finish_reason}"
    return (
        f"muxtui: {stats.model} via {stats.provider} · first token {stats.ttft_s * 1000:.0f} ms · "
        f"{stats.tokens_per_s:.1f} tok/s · {stats.prompt_tokens} prompt + "
        f"{stats.completion_tokens} completion tokens · {stats.total_s:.2f} s{ended}"
    )
