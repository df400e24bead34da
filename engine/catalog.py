"""Model rows (`ModelEntry`) built from the config and from discovery, without I/O.

Live rows of running local servers come from the server manager; everything else is here.
"""

from __future__ import annotations

from collections.abc import Iterable

from muxtui.engine.config import Config
from muxtui.engine.events import ModelEntry, ServerState
from muxtui.engine.router import DiscoveredModel


def remote_entries(config: Config) -> list[ModelEntry]:
    """One REMOTE row per `[models]` entry."""
    return [
        ModelEntry(
            name=name,
            provider=model.provider,
            local=False,
            state=ServerState.REMOTE,
            model_id=model.id or name,
            source="config",
        )
        for name, model in config.models.items()
    ]


def local_entries(config: Config) -> list[ModelEntry]:
    """One COLD row per `[local]` entry, as known before any scan."""
    return [
        ModelEntry(name, "local", True, ServerState.COLD, path=local.path, pinned=local.pin)
        for name, local in config.local.items()
    ]


def configured_entries(config: Config) -> list[ModelEntry]:
    """Every model the config names: what the app shows before the engine has started."""
    return remote_entries(config) + local_entries(config)


def discovered_entries(models: Iterable[DiscoveredModel]) -> list[ModelEntry]:
    """One REMOTE row per model found on a reachable provider."""
    return [
        ModelEntry(
            name=model.name,
            provider=model.provider,
            local=False,
            state=ServerState.REMOTE,
            model_id=model.model_id,
            source=model.source,
            size_bytes=model.size_bytes,
            detail=model.detail,
        )
        for model in models
    ]
