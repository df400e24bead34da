"""Model rows (`ModelEntry`) built from the config and from discovery, without I/O.

Live rows of running local servers come from the server manager; everything else is here.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from muxtui.engine.config import Config, ProviderConfig
from muxtui.engine.discovery import is_loopback
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


def discovered_entries(
    models: Sequence[DiscoveredModel], providers: Mapping[str, ProviderConfig]
) -> list[ModelEntry]:
    """Rows for discovered models. One on a server on this machine that muxtui did not start is
    not "remote": it is warm (a server answering with its model loaded) or, for an Ollama model
    not loaded yet, cold; `local` stays False because muxtui cannot start or stop it."""
    entries = []
    for model in models:
        provider = providers.get(model.provider)
        state, detail = ServerState.REMOTE, model.detail
        if provider is not None and is_loopback(provider):
            host = urllib.parse.urlsplit(provider.urls[0]).netloc
            loaded = model.loaded if model.loaded is not None else provider.kind != "ollama"
            state = ServerState.WARM if loaded else ServerState.COLD
            where = f"on this machine ({host}), started outside muxtui"
            detail = f"{where}; {detail}" if detail else where
        entries.append(
            ModelEntry(
                name=model.name,
                provider=model.provider,
                local=False,
                state=state,
                model_id=model.model_id,
                source=model.source,
                size_bytes=model.size_bytes,
                detail=detail,
            )
        )
    return entries


_ENTRY_FIELDS = frozenset(field.name for field in dataclasses.fields(ModelEntry))


def entry_to_json(entry: ModelEntry) -> dict[str, Any]:
    """One model as a JSON object (DESIGN.md: name, provider, local, state, and the rest)."""
    data = dataclasses.asdict(entry)
    data["state"] = str(entry.state)
    return data


def entry_from_json(obj: Mapping[str, Any]) -> ModelEntry:
    """The entry `entry_to_json` wrote (fields it does not know are left out; an unknown state
    reads as remote). Raises ValueError when name, provider or local is missing."""
    fields = {key: value for key, value in obj.items() if key in _ENTRY_FIELDS}
    if not isinstance(fields.get("name"), str) or not isinstance(fields.get("provider"), str):
        raise ValueError("a model entry needs a name and a provider")
    try:
        fields["state"] = ServerState(fields.get("state", "remote"))
    except ValueError:
        fields["state"] = ServerState.REMOTE
    fields["local"] = bool(fields.get("local", False))
    return ModelEntry(**fields)
