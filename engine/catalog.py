"""The models a config names, as `ModelEntry` rows, built from the config alone (no I/O)."""

from __future__ import annotations

from muxtui.engine.config import Config
from muxtui.engine.events import ModelEntry, ServerState


def configured_entries(config: Config) -> list[ModelEntry]:
    """One REMOTE row per `[models]` entry, as `Engine.list_models` and the app show it."""
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
