"""Where muxtui keeps its files: config, data (history), cache and logs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

APP_NAME = "muxtui"
CONFIG_ENV = "MUXTUI_CONFIG"


@dataclass(frozen=True)
class Paths:
    """The directories and files muxtui reads and writes."""

    config_file: Path
    data_dir: Path
    cache_dir: Path
    log_dir: Path

    @classmethod
    def default(cls, config_override: str | os.PathLike[str] | None = None) -> Paths:
        """Resolve the platform dirs; `--config` wins over `MUXTUI_CONFIG` over the default."""
        import platformdirs

        override = config_override or os.environ.get(CONFIG_ENV) or None
        config_file = (
            Path(override).expanduser()
            if override
            else Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"
        )
        return cls(
            config_file=config_file,
            data_dir=Path(platformdirs.user_data_dir(APP_NAME)),
            cache_dir=Path(platformdirs.user_cache_dir(APP_NAME)),
            log_dir=Path(platformdirs.user_log_dir(APP_NAME)),
        )

    @property
    def history_db(self) -> Path:
        """The SQLite file holding conversations."""
        return self.data_dir / "history.sqlite3"

    @property
    def response_cache_db(self) -> Path:
        """The SQLite file of cached replies (`[response_cache] backend = "sqlite"`)."""
        return self.cache_dir / "responses.sqlite3"

    @property
    def serve_state_file(self) -> Path:
        """Where a running `muxtui serve` writes its address, so other muxtui processes use it."""
        return self.data_dir / "serve.json"

    @property
    def models_dir(self) -> Path:
        """The default folder scanned for GGUF files."""
        return self.data_dir / "models"

    @property
    def server_log_dir(self) -> Path:
        """Per-server log files of the local model servers muxtui starts."""
        return self.log_dir / "servers"
