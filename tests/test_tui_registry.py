"""The pane registry: a pane is one module and one entry, built with the engine on first show."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.widgets import Static

from muxtui.engine.config import load_config
from muxtui.engine.core import Engine
from muxtui.engine.paths import Paths
from muxtui.tui.app import APP_BINDINGS, MuxtuiApp, pane_bindings, pane_styles
from muxtui.tui.bridge import EventReceived
from muxtui.tui.panes import PANES, PaneCommand, PaneSpec
from tests.fake_server import FakeOpenAIServer
from tests.test_tui_keys_and_palette import palette_titles
from tests.test_tui_support import provider_config, started, wait_until, without_local_extra

WriteConfig = Callable[[str], Path]
BUILT: list[object] = []  # what each ProbePane was built with


class ProbePane(Static, can_focus=True):
    """A pane as the contract describes it: built with the engine, it reads from it itself."""

    def __init__(self, engine: Engine) -> None:
        super().__init__("", id="probe-pane")
        BUILT.append(engine)
        self.engine = engine
        self.events: list[object] = []
        self.pings = 0

    def compose(self) -> ComposeResult:
        """Nothing inside: the pane draws its text."""
        yield from ()

    def on_mount(self) -> None:
        """Show what the engine knows."""
        self.update(", ".join(entry.name for entry in self.engine.list_models()))

    def on_event_received(self, event: EventReceived) -> None:
        """Keep what the app forwards."""
        self.events.append(event.data)

    def action_ping(self) -> None:
        """A palette command's action."""
        self.pings += 1


PROBE = PaneSpec(
    id="probe",
    title="Probe",
    key="f9",
    module=__name__,
    class_name="ProbePane",
    description="A pane added with one entry",
    focus="probe-pane",
    commands=(PaneCommand("Ping the probe", "Count a ping", "ping"),),
)


class AppWithProbe(MuxtuiApp):
    """The app with one more registry entry and nothing else changed."""

    PANES = (*PANES, PROBE)
    CSS_PATH = pane_styles(PANES)
    BINDINGS: ClassVar[list[BindingType]] = [*pane_bindings(PANES), *APP_BINDINGS]


async def test_one_entry_adds_a_pane_with_its_key_tab_and_commands(
    fake_server: FakeOpenAIServer, write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_local_extra(monkeypatch)  # the list is exactly what the config names
    BUILT.clear()
    paths = Paths.default(write_config(provider_config(fake_server.base_url)))
    app = AppWithProbe(load_config(paths.config_file, must_exist=True), paths)
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        assert "Probe F9" in str(app.query_one("#pane-tabs").render())
        assert BUILT == []  # not built until shown
        titles = await palette_titles(pilot)
        assert titles.count("Probe pane") == 1 and titles.count("Ping the probe") == 1

        await pilot.press("f9")
        await wait_until(pilot, lambda: app.pane("probe") is not None, "the probe pane")
        probe = app.pane("probe")
        assert isinstance(probe, ProbePane)
        assert len(BUILT) == 1 and BUILT[0] is app.engine
        assert app.active_pane == "probe" and probe.has_focus
        assert str(probe.render()) == "fake"

        app.post_message(EventReceived("any engine event"))
        await wait_until(pilot, lambda: probe.events == ["any engine event"], "the event")
        await app.run_pane_action("probe", "ping")
        assert probe.pings == 1
