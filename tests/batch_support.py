"""Helpers for the batch tests: configs for loopback servers, input files, reading the outputs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from muxtui.engine.config import Config, ModelConfig, NetworkConfig, ProviderConfig
from muxtui.engine.retry import RetryPolicy

FAST = RetryPolicy(retries=6, base_delay=0.005, max_delay=0.02)


def batch_config(
    base_url: str | list[str], *, models: dict[str, str] | None = None, max_connections: int = 0
) -> Config:
    """One provider `fake` at `base_url` (one or several) with models named to its ids."""
    named = models or {"m": "fake-model"}
    return Config(
        providers={"fake": ProviderConfig(base_url=base_url, max_connections=max_connections)},
        models={
            name: ModelConfig(provider="fake", id=model_id) for name, model_id in named.items()
        },
        network=NetworkConfig(discovery=False),
    )


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """One JSON value per line (strings are written as they are: bad lines on purpose)."""
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def prompts(count: int, start: int = 0, **extra: Any) -> list[dict[str, Any]]:
    """`count` prompt lines with ids `r<n>`."""
    return [
        {"custom_id": f"r{n}", "prompt": f"question {n}", **extra}
        for n in range(start, start + count)
    ]


def records(path: Path) -> list[dict[str, Any]]:
    """Every record of an output file (none if it does not exist); fails on a torn line."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    assert not raw or raw.endswith(b"\n"), f"{path.name} ends in a torn line"
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def ids(path: Path) -> list[str]:
    """The custom_ids of an output file, in file order."""
    return [record["custom_id"] for record in records(path)]


def assert_each_once(expected: set[str], *paths: Path) -> None:
    """Every expected custom_id appears exactly once across the files, and nothing else does."""
    counts = Counter(custom_id for path in paths for custom_id in ids(path))
    repeated = {custom_id: n for custom_id, n in counts.items() if n > 1}
    assert not repeated, f"repeated: {sorted(repeated)[:10]}"
    missing, extra = sorted(expected - set(counts)), sorted(set(counts) - expected)
    assert not missing and not extra, f"missing {missing[:10]}, extra {extra[:10]}"


def sent_prompts(server: Any) -> list[str]:
    """The last message's content of every chat request the server received."""
    return [
        request.json["messages"][-1]["content"]
        for request in server.requests
        if request.method == "POST" and isinstance(request.json, dict)
    ]
