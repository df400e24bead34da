"""The pane registry: every pane of the app, and the contract a pane keeps.

A pane is one folder under `tui/panes/` plus one `PaneSpec` in `PANES` below; the app builds its
tabs, F-key bindings, palette commands and styles from this list, so adding a pane edits nothing
else. The contract:

- **Construction.** The class named by `module` and `class_name` is imported on first show and
  built as `PaneClass(engine)`, with the started `muxtui.engine.core.Engine`; until the engine has
  started, the tab says so and the pane mounts as soon as it has. Only the pane marked
  `first_frame` (Chat) is composed into the first frame, before the engine is imported: it is
  built as `PaneClass(None)` and the app sets its `engine` attribute once the engine has started
  (attributes go down). Until then it reads the config and paths from the app (`PaneHost`).
- **Engine events.** The app forwards every engine event to every mounted pane as a
  `muxtui.tui.bridge.EventReceived` message whose `data` is the engine's frozen dataclass
  (`ModelsChanged`, `ServerStateChanged`, ...); a pane that cares handles it, reading the data
  it carries rather than asking the engine again. A pane that polls (the Monitor) does so with
  its own worker, only while it is shown, and may ignore these messages.
- **Messages up.** A pane never reaches into the app or another pane; it posts `TitleChanged`
  (the header's subtitle) or `ChoiceMade` (a `[ui]` setting to save) and the app acts on them.
- **Independence.** Panes never import each other (an import-linter contract checks it); what
  two panes share lives in `tui/widgets/` or `tui/display.py`. Widgets used by one pane live in
  its folder.
- **Keys and palette.** `key` ("f3") switches to the pane (binding id `pane-<id>`, remappable
  under `[ui.keys]`). Each `PaneCommand` is offered in the command palette: choosing it shows
  the pane (mounting it if need be) and calls the pane's `action_<action>` method even when
  `check_action` would hide its key, so that method explains in a notification when it cannot
  act (nothing selected, no reply streaming).
- **Styles.** `css` names a `.tcss` file in the pane's folder; the app loads it with its own.
- **Focus.** `focus` is the id of the widget focused when the pane is shown.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from textual.message import Message

if TYPE_CHECKING:
    from collections.abc import Callable

    from textual.widget import Widget

    from muxtui.engine.config import Config
    from muxtui.engine.core import Engine
    from muxtui.engine.paths import Paths


@dataclass(frozen=True)
class PaneCommand:
    """One command-palette entry of a pane: what it says, and the pane action it runs."""

    title: str
    help: str
    action: str  # an action of the pane, e.g. "new_chat" runs `pane.action_new_chat()`


@dataclass(frozen=True)
class PaneSpec:
    """Everything the app needs to host one pane."""

    id: str  # the tab's id, and `pane-<id>` is its key binding's id
    title: str  # the tab's label
    key: str  # the key that shows the pane, e.g. "f2"
    module: str  # the module holding the pane class, imported on first show
    class_name: str
    description: str  # help for the key binding and the palette's "<title> pane" entry
    commands: tuple[PaneCommand, ...] = ()
    focus: str = ""  # id of the widget to focus when the pane is shown
    css: str = ""  # a .tcss file in the pane's folder
    first_frame: bool = False  # composed into the first frame, before the engine exists

    def load(self) -> Callable[[Engine | None], Widget]:
        """Import the pane's module and return its class."""
        pane_class = getattr(importlib.import_module(self.module), self.class_name)
        return cast("Callable[[Engine | None], Widget]", pane_class)

    def css_path(self) -> Path | None:
        """The pane's style file, if it has one."""
        if not self.css:
            return None
        spec = find_spec(self.module)
        assert spec is not None and spec.origin is not None, self.module
        return Path(spec.origin).parent / self.css


class PaneHost(Protocol):
    """What a first-frame pane may read from the app (`cast(PaneHost, self.app)`) before the
    engine exists; once it runs, the engine holds the same config and paths."""

    config: Config
    paths: Paths


class TitleChanged(Message):
    """A pane's title for the header changed (e.g. the open conversation's)."""

    def __init__(self, title: str) -> None:
        super().__init__()
        self.title = title


class ChoiceMade(Message):
    """The person made a choice worth keeping: `name` is a field of `[ui]` in the config."""

    def __init__(self, name: str, value: str) -> None:
        super().__init__()
        self.name = name
        self.value = value


PANES: tuple[PaneSpec, ...] = (
    PaneSpec(
        id="chat",
        title="Chat",
        key="f2",
        module="muxtui.tui.panes.chat.pane",
        class_name="ChatPane",
        description="Chat with any model; conversations are kept",
        focus="prompt",
        css="chat.tcss",
        first_frame=True,
        commands=(
            PaneCommand("New chat", "Start a new conversation", "new_chat"),
            PaneCommand("Switch model", "Pick the model for the chat (fuzzy search)", "pick_model"),
            PaneCommand(
                "Chat settings", "System prompt, temperature and max tokens", "toggle_settings"
            ),
            PaneCommand("Stop reply", "Stop the streaming reply; the partial text stays", "stop"),
            PaneCommand("Copy last reply", "Copy the last reply to the clipboard", "copy_reply"),
            PaneCommand(
                "Conversations", "Focus the list of saved conversations", "focus_conversations"
            ),
            PaneCommand("Rename conversation", "Rename the open conversation", "rename_chat"),
            PaneCommand("Delete conversation", "Delete the open conversation", "delete_chat"),
            PaneCommand(
                "Export conversation",
                "Write the open conversation to a Markdown file (~/Downloads, else the "
                "folder muxtui started in)",
                "export_chat",
            ),
        ),
    ),
    PaneSpec(
        id="models",
        title="Models",
        key="f3",
        module="muxtui.tui.panes.models.pane",
        class_name="ModelsPane",
        description="Every model with its state; preload, unload and pin local servers",
        focus="model-table",
        css="models.tcss",
        commands=(
            PaneCommand("Preload model", "Start the selected local server now", "preload"),
            PaneCommand("Unload model", "Stop the selected local server", "unload"),
            PaneCommand("Pin or unpin model", "Never evict the selected server", "toggle_pin"),
            PaneCommand("Rescan models", "Look again for GGUF files and llama-server", "rescan"),
        ),
    ),
    PaneSpec(
        id="monitor",
        title="Monitor",
        key="f4",
        module="muxtui.tui.panes.monitor.pane",
        class_name="MonitorPane",
        description="Live RAM, swap, CPU and GPUs; memory per model; leak and pressure alerts",
        focus="monitor-models",
        commands=(
            PaneCommand(
                "Monitor time window",
                "Switch the graphs between 1 min, 10 min and 1 h",
                "next_window",
            ),
        ),
    ),
    PaneSpec(
        id="hardware",
        title="Hardware",
        key="f5",
        module="muxtui.tui.panes.hardware.pane",
        class_name="HardwarePane",
        description="What this machine has, and per model: estimate vs measured, fits, flags",
        focus="hw-models",
        commands=(
            PaneCommand(
                "Refresh fit", "Detect the hardware and weigh every model again", "refresh_report"
            ),
            PaneCommand(
                "Apply flags",
                "Write the what-if's flags into the model's [local] entry",
                "apply_flags",
            ),
        ),
    ),
    PaneSpec(
        id="batch",
        title="Batch",
        key="f6",
        module="muxtui.tui.panes.batch.pane",
        class_name="BatchPane",
        description="Run a file of prompts through a model; resumes without repeating an item",
        focus="batch-input",
        commands=(
            PaneCommand("Start batch", "Run the Batch pane's input file", "start_batch"),
            PaneCommand("Cancel batch", "Stop the running batch cleanly", "cancel_batch"),
            PaneCommand("Resume batch", "Finish the last batch without repeats", "resume_batch"),
        ),
    ),
)
