"""`muxtui config`: the config file in use and every resolved setting, keys masked."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from muxtui.cli import Context


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `config`."""
    parser = subparsers.add_parser(
        "config",
        help="show the config file in use and the resolved settings (API keys masked)",
        description="Print the config path in use and every resolved setting as TOML.",
    )
    parser.add_argument("--path", action="store_true", help="print only the config file path")


def run(args: argparse.Namespace, context: Context) -> int:
    """Print the path and the masked settings."""
    import tomli_w

    from muxtui.engine.config import masked

    path = context.paths.config_file
    if args.path:
        print(path)
        return 0
    state = "" if path.exists() else "  (not found: using defaults)"
    print(f"# config file: {path}{state}")
    print(f"# data: {context.paths.data_dir}  logs: {context.paths.log_dir}")
    print(tomli_w.dumps(masked(context.config)), end="")
    return 0
