"""The `[ui]` choices a person makes in the app (theme, last model), saved to the config file."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from muxtui.engine.config_file import update_config_file
from muxtui.engine.errors import MuxtuiError

if TYPE_CHECKING:
    from textual.app import App
    from textual.timer import Timer

# Seconds a changed choice waits before the config is written, so a burst of changes is one write.
SAVE_AFTER_S = 0.3


class UiChoices:
    """Collects changed `[ui]` settings and writes them in a thread a moment after the last one."""

    def __init__(self, app: App[int], config_file: Path) -> None:
        self._app = app
        self._config_file = config_file
        self._unsaved: dict[str, str] = {}
        self._timer: Timer | None = None

    def changed(self, name: str, value: str) -> None:
        """Remember a new value; the file is written once the changes pause."""
        self._unsaved[name] = value
        if self._timer is not None:
            self._timer.stop()
        self._timer = self._app.set_timer(SAVE_AFTER_S, self._save_in_thread)

    def save_now(self) -> None:
        """Write what is pending at once (the app is closing: no one would see an error)."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
            self._save(self._take())

    def _take(self) -> dict[str, str]:
        changes, self._unsaved = self._unsaved, {}
        return changes

    def _save_in_thread(self) -> None:
        self._timer = None
        worker = partial(self._save_worker, self._take())
        self._app.run_worker(worker, thread=True, group="save-config", exit_on_error=False)

    def _save_worker(self, changes: dict[str, str]) -> None:
        if error := self._save(changes):
            self._app.call_from_thread(
                self._app.notify, error, title="settings not saved", severity="warning"
            )

    def _save(self, changes: dict[str, str]) -> str:
        """Write the changes (atomic, mode 0600); returns what went wrong, if anything."""
        if not changes:
            return ""
        try:
            update_config_file(self._config_file, "ui", changes)
        except OSError as exc:
            return f"could not save {self._config_file}: {exc.strerror or exc}"
        except MuxtuiError as exc:
            return str(exc)
        return ""
