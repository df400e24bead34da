"""`muxtui models`: every known model with its state, as a table or one JSON array."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from muxtui.cli import Context
    from muxtui.engine.events import ModelEntry

# Remote catalogs (OpenRouter lists hundreds of models) may take a moment; never wait longer.
DISCOVERY_WAIT_S = 12.0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `models`."""
    parser = subparsers.add_parser(
        "models",
        help="list every known model (configured, local, discovered) with its state",
        description=(
            "List configured models, local models muxtui can start ([local] entries, GGUF "
            "files in the model folders, the bundled Gemma) and models found on reachable "
            "providers, each with its state."
        ),
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON array instead of a table"
    )


def run(args: argparse.Namespace, context: Context) -> int:
    """Print the models."""
    import asyncio

    from muxtui.engine.catalog import entry_to_json

    entries = asyncio.run(_collect(context))
    if args.json:
        print(json.dumps([entry_to_json(entry) for entry in entries], indent=2))
    else:
        print(format_table(entries))
    return 0


async def _collect(context: Context) -> list[ModelEntry]:
    from muxtui.engine.core import Engine

    async with Engine(context.config, context.paths) as engine:
        await engine.rescan()  # local discovery: GGUF files, the bundled model
        await engine.wait_discovered(timeout=DISCOVERY_WAIT_S)
        return engine.list_models()


def format_table(entries: list[ModelEntry]) -> str:
    """A plain-text table, one model per line."""
    if not entries:
        return "no models: add [models] or [local] entries to the config, or install muxtui[local]"
    header = ("NAME", "PROVIDER", "STATE", "SIZE", "PORT", "PID", "DETAIL")
    rows = [header]
    for entry in entries:
        detail = entry.detail or entry.path or entry.model_id
        if entry.pinned:
            detail = f"pinned; {detail}" if detail else "pinned"
        rows.append(
            (
                entry.name,
                entry.provider,
                str(entry.state),
                human_size(entry.size_bytes),
                str(entry.port or ""),
                str(entry.pid or ""),
                detail[:80],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def human_size(size: int) -> str:
    """Bytes as e.g. '253 MB' (decimal units, as model files are usually quoted); '' for 0."""
    if size <= 0:
        return ""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.1f} {unit}" if value < 10 and unit != "B" else f"{value:.0f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
