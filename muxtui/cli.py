"""The `muxtui` command line: global options, subcommand dispatch, one-line errors.

Start-up stays lazy: nothing here imports textual or httpx until a subcommand needs them,
so `muxtui --version` and `muxtui --help` are instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from muxtui import __version__

if TYPE_CHECKING:
    from muxtui.engine.config import Config
    from muxtui.engine.paths import Paths

# Subcommand modules under `muxtui.commands`; each has `add_parser(subparsers)` and
# `run(args, context) -> int`. Only commands that work are listed, so `--help` never lies.
COMMANDS = ("ask", "models", "monitor", "doctor", "batch", "serve", "config")


@dataclass
class Context:
    """What every subcommand gets: the resolved paths and the loaded config."""

    paths: Paths
    config: Config


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every working subcommand."""
    parser = argparse.ArgumentParser(
        prog="muxtui",
        description="Chat with local and remote models, keep local servers warm, watch memory.",
        epilog="With no command, muxtui opens the full-screen app.",
    )
    parser.add_argument("--version", action="version", version=f"muxtui {__version__}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="config file to use (default: $MUXTUI_CONFIG or the platform config dir)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"muxtui.commands.{name}")
        module.add_parser(subparsers)
    return parser


def load_context(config_option: str | None) -> Context:
    """Resolve paths and load the config; an explicitly named file must exist."""
    import os

    from muxtui.engine.config import load_config
    from muxtui.engine.paths import CONFIG_ENV, Paths

    paths = Paths.default(config_option)
    explicit = bool(config_option or os.environ.get(CONFIG_ENV))
    return Context(paths, load_config(paths.config_file, must_exist=explicit))


def main(argv: Sequence[str] | None = None) -> int:
    """Run muxtui; returns the exit status (2 for anything a person can fix)."""
    from muxtui.engine.errors import MuxtuiError

    args = build_parser().parse_args(argv)
    try:
        context = load_context(args.config)
        if args.command is None:
            from muxtui.tui.app import run_app

            return run_app(context.config, context.paths)
        module = importlib.import_module(f"muxtui.commands.{args.command}")
        status: int = module.run(args, context)
        return status
    except MuxtuiError as exc:
        print(f"{exc.prefix}{exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("muxtui: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
