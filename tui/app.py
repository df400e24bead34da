"""The muxtui app: header, a strip of the registered panes, the shown pane, footer."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Container
from textual.screen import Screen
from textual.widget import MountError, Widget
from textual.widgets import ContentSwitcher, Header, Static

from muxtui.engine.config import Config
from muxtui.engine.paths import Paths
from muxtui.themes import ThemeFileError, load_themes
from muxtui.tui.bridge import (
    DiscoveryFinished,
    EngineBridge,
    EngineFailed,
    EngineStarted,
    EventReceived,
)
from muxtui.tui.display import describe, key_hint
from muxtui.tui.panes import PANES, ChoiceMade, PaneSpec, TitleChanged
from muxtui.tui.ui_choices import UiChoices
from muxtui.tui.widgets.footer import KeysFooter
from muxtui.tui.widgets.pane_tabs import PaneTabs

if TYPE_CHECKING:
    from textual.theme import Theme

    from muxtui.engine.core import Engine

DEFAULT_THEME = "muxtui-dark"
# How long the chat pane says "looking for models" before it shows how to add one; local
# probes give up after 0.5 s, so only remote catalogs can still be running by then.
DISCOVERY_WAIT_S = 3.0
# Seconds after the first paint before the engine starts.
FIRST_FRAME_SETTLE_S = 0.05
# Below this many columns the layout narrows (the conversation list folds away, the Models
# table drops its least useful columns); below this many rows the Models pane splits its
# height evenly between the table and the server log.
NARROW_BELOW = 100
SHORT_BELOW = 32


def _load_engine_class(panes: Sequence[PaneSpec]) -> type[Engine]:
    """Import the engine, the Markdown widget and every pane's module, off the first frame."""
    from muxtui.engine.core import Engine
    from muxtui.tui.panes.chat import message_view  # noqa: F401  (warms the Markdown import)

    for spec in panes:  # so that showing a pane the first time costs only its mount
        spec.load()
    return Engine


def pane_styles(panes: Sequence[PaneSpec]) -> list[str | PurePath]:
    """The app's own style file, then that of every pane that has one."""
    paths = [path for spec in panes if (path := spec.css_path()) is not None]
    return [Path(__file__).parent / "app.tcss", *paths]


def pane_bindings(panes: Sequence[PaneSpec]) -> list[BindingType]:
    """The key that shows each pane (id `pane-<id>`), off the footer: the strip shows them."""
    return [
        Binding(
            spec.key,
            f"show_pane('{spec.id}')",
            spec.title,
            id=f"pane-{spec.id}",
            tooltip=f"Show the {spec.title} pane",
            show=False,
        )
        for spec in panes
    ]


# The app's own keys besides the panes'. Theme is off the footer (the palette offers it too): at
# 80 columns the chat's keys need the room.
APP_BINDINGS: list[BindingType] = [
    Binding("ctrl+t", "pick_theme", "Theme", id="pick-theme", tooltip="Switch theme", show=False),
]


class MuxtuiApp(App[int]):
    """Chat with local and remote models and keep local model servers warm."""

    PANES: ClassVar[Sequence[PaneSpec]] = PANES  # the registry; a subclass may host others
    CSS_PATH: ClassVar[list[str | PurePath]] = pane_styles(PANES)
    TITLE = "muxtui"
    SUB_TITLE = "New chat"
    # Textual annotates these as `ClassVar[...] | None`, which mypy reads as instance variables.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (NARROW_BELOW, "-wide")]  # noqa: RUF012
    VERTICAL_BREAKPOINTS = [(0, "-short"), (SHORT_BELOW, "-tall")]  # noqa: RUF012
    BINDINGS: ClassVar[list[BindingType]] = [*pane_bindings(PANES), *APP_BINDINGS]

    def __init__(self, config: Config, paths: Paths, engine: Engine | None = None) -> None:
        super().__init__()
        self.config = config
        self.paths = paths
        self.engine: Engine | None = engine
        self.engine_started = False
        self.engine_error = ""
        self.bridge = EngineBridge(self)
        self.panes: dict[str, Widget] = {}  # mounted panes by id
        self.ui_choices = UiChoices(self, paths.config_file)
        self._theme_file_error = ""
        try:
            for theme in load_themes():
                self.register_theme(theme)
        except ThemeFileError as exc:
            self._theme_file_error = str(exc)
        wanted = config.ui.theme
        self._use_theme(wanted if wanted in self.available_themes else self._fallback_theme())
        if config.ui.keys:
            self.set_keymap(config.ui.keys)

    def _use_theme(self, name: str) -> None:
        """Start in theme `name` without the theme watcher.

        Setting `theme` runs Textual's watcher, which queues a full re-parse of the CSS and a
        restyle of every widget: at start-up that doubles the styling work of the first frame.
        Before the app runs (nothing is parsed or styled yet), the theme's variables and the
        classes the watcher sets are all a theme needs.
        """
        self.set_reactive(App.theme, name)
        self.stylesheet.set_variables(self.get_css_variables())
        dark = self.current_theme.dark
        self.set_class(dark, "-dark-mode", update=False)
        self.set_class(not dark, "-light-mode", update=False)
        self.set_class(True, f"-theme-{name}", update=False)

    def _fallback_theme(self) -> str:
        return DEFAULT_THEME if DEFAULT_THEME in self.available_themes else "textual-dark"

    def get_theme_variable_defaults(self) -> dict[str, str]:
        """Our colours for themes that do not set them (Textual's built-ins), from the theme."""
        theme = self.current_theme
        foreground = theme.foreground or ("#e0e0e0" if theme.dark else "#202020")
        return {
            "chat-user": theme.secondary or theme.primary,
            "chat-assistant": theme.primary,
            "reply-stats": f"{foreground} 60%",
        }

    def compose(self) -> ComposeResult:
        """Header, the pane strip, one slot per registered pane (only the first-frame one
        filled), the footer."""
        yield Header(show_clock=False, icon="◆")
        initial = next(spec for spec in self.PANES if spec.first_frame)
        keymap = self.config.ui.keys
        tabs = [
            (
                spec.id,
                spec.title,
                key_hint(keymap, self.BINDINGS, f"pane-{spec.id}", spelled_out=True),
            )
            for spec in self.PANES
        ]
        yield PaneTabs(tabs, initial.id, id="pane-tabs")
        with ContentSwitcher(id="panes", initial=initial.id):
            for spec in self.PANES:
                if spec.first_frame:
                    pane = spec.load()(None)
                    self.panes[spec.id] = pane
                    yield Container(pane, id=spec.id, classes="pane-slot")
                else:
                    yield Container(id=spec.id, classes="pane-slot")
        yield KeysFooter()

    async def on_mount(self) -> None:
        """Save theme changes, report a broken theme file, start the engine after the frame."""
        # Focus now, so the first frame has the focused pane's keys in the footer (Textual would
        # focus as the screen resumes, and the footer would change a refresh later).
        initial = next(spec for spec in self.PANES if spec.first_frame)
        if initial.focus:
            self.screen.set_focus(self.query_one(f"#{initial.focus}"), scroll_visible=False)
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        if self._theme_file_error:
            self.notify(self._theme_file_error, title="theme file", severity="warning")
        if self.config.ui.theme not in self.available_themes:
            self.notify(
                f"theme {self.config.ui.theme!r} is not known; using {self.theme} "
                "(Ctrl+T picks one)",
                severity="warning",
            )
        # The engine's import holds the GIL: it starts a moment after the first paint so it
        # cannot delay it (or the refreshes right after it, e.g. the terminal's resize).
        self.call_after_refresh(self.set_timer, FIRST_FRAME_SETTLE_S, self._start_engine)

    # --- engine ------------------------------------------------------------------------------

    def _start_engine(self) -> None:
        gc.enable()  # see run_app
        self.run_worker(self._run_engine_start(), group="engine", exit_on_error=False)

    async def _run_engine_start(self) -> None:
        """Create (if needed) and start the engine; history and discovery happen here."""
        try:
            engine_class = await asyncio.to_thread(_load_engine_class, self.PANES)
            if self.engine is None:
                self.engine = engine_class(self.config, self.paths)
            self.bridge.attach(self.engine)
            await self.engine.start()
        except Exception as exc:  # whatever it is, say so in the pane instead of failing silently
            self.post_message(EventReceived(EngineFailed(describe(exc))))
            self.post_message(EventReceived(DiscoveryFinished()))
            return
        self.post_message(EngineStarted())
        await self.engine.wait_discovered(timeout=DISCOVERY_WAIT_S)
        self.post_message(EventReceived(DiscoveryFinished()))

    @on(EngineStarted)
    async def _engine_started(self) -> None:
        assert self.engine is not None
        self.engine_started = True
        # The engine, Markdown and every pane's module are imported now and live as long as
        # the process: frozen like the first imports, so a full collection (which would walk
        # them all: 40-90 ms, e.g. in the middle of opening a conversation) no longer does.
        gc.freeze()
        for spec in self.PANES:
            if spec.first_frame and (pane := self.panes.get(spec.id)) is not None:
                pane.engine = self.engine  # type: ignore[attr-defined]  # see the pane contract
        if self.active_pane not in self.panes:  # shown while the engine was starting
            await self._mount_pane(self.active_pane)
            self._focus_pane(self.active_pane)

    @on(EventReceived)
    def _event_received(self, event: EventReceived) -> None:
        """Hand the event to every mounted pane (panes that do not care ignore it)."""
        if isinstance(event.data, EngineFailed):
            self.engine_error = event.data.error
            self.notify(
                event.data.error, title="muxtui could not start", severity="error", timeout=30
            )
            for slot in self.query(".pane-slot").results(Container):
                if slot.id not in self.panes:
                    self._show_placeholder(slot)
        else:
            self._say_engine_change(event.data)
        for pane in self.panes.values():
            pane.post_message(EventReceived(event.data, event.turn_id))

    def _say_engine_change(self, data: object) -> None:
        """A `muxtui serve` took over the local servers or went away, or the reply cache stopped
        or started working again: say it once."""
        from muxtui.engine.events import ResponseCacheChanged
        from muxtui.engine.local.remote_owner import ServeOwnerChanged  # engine is loaded now

        if isinstance(data, ResponseCacheChanged):
            if data.healthy:
                self.notify(data.message, title="reply cache", timeout=8)
            else:
                self.notify(data.message, title="reply cache", severity="warning", timeout=8)
        if isinstance(data, ServeOwnerChanged):
            if data.live:
                self.notify(data.message, title="muxtui serve", timeout=8)
            else:
                self.notify(data.message, title="muxtui serve", severity="warning", timeout=8)

    async def on_unmount(self) -> None:
        """Write a pending config change and close the engine (stopping its servers)."""
        self.ui_choices.save_now()
        self.bridge.detach()
        if self.engine is not None:
            await self.engine.aclose()

    # --- panes -------------------------------------------------------------------------------

    def pane(self, pane_id: str) -> Widget | None:
        """The mounted pane with this id, or None if it has not been shown yet."""
        return self.panes.get(pane_id)

    @property
    def active_pane(self) -> str:
        """The id of the pane shown."""
        return self.query_one(PaneTabs).active

    async def action_show_pane(self, pane_id: str) -> None:
        """Switch to a pane by id (mounting it the first time) and focus its main widget."""
        self.query_one(PaneTabs).active = pane_id
        self.query_one("#panes", ContentSwitcher).current = pane_id
        await self._mount_pane(pane_id)
        self._focus_pane(pane_id)

    async def _mount_pane(self, pane_id: str) -> Widget | None:
        """Mount a pane built with the engine; until the engine has started, say so instead."""
        if pane_id in self.panes:
            return self.panes[pane_id]
        slot = self.query_one(f"#panes > #{pane_id}", Container)
        if self.engine is None or not self.engine_started:
            self._show_placeholder(slot)
            return None
        spec = next(spec for spec in self.PANES if spec.id == pane_id)
        pane = spec.load()(self.engine)
        self.panes[pane_id] = pane
        await slot.remove_children()
        with contextlib.suppress(MountError):  # the app is already closing
            await slot.mount(pane)
        return pane

    def _show_placeholder(self, slot: Container) -> None:
        text = (
            f"muxtui could not start its engine: {self.engine_error}"
            if self.engine_error
            else "Starting the engine…"
        )
        placeholders = slot.query(".pane-placeholder")
        if placeholders:
            placeholders.first(Static).update(text)
        else:
            slot.mount(Static(text, classes="pane-placeholder", markup=False))

    def _focus_pane(self, pane_id: str) -> None:
        spec = next(spec for spec in self.PANES if spec.id == pane_id)
        pane = self.panes.get(pane_id)
        if spec.focus and pane is not None:
            for widget in pane.query(f"#{spec.focus}") if pane.id != spec.focus else [pane]:
                widget.focus()

    async def run_pane_action(self, pane_id: str, action: str) -> None:
        """Show a pane, then run one of its actions (what the palette's pane commands do)."""
        await self.action_show_pane(pane_id)
        pane = self.panes.get(pane_id)
        if pane is None:
            self.notify("muxtui is still starting its engine; try again in a moment.")
            return
        # Called directly rather than through `run_action`, which skips an action the pane's
        # `check_action` hides from the footer: from the palette, the action explains instead.
        outcome = getattr(pane, f"action_{action}")()
        if inspect.isawaitable(outcome):
            await outcome

    @on(TitleChanged)
    def _title_changed(self, event: TitleChanged) -> None:
        self.sub_title = event.title

    # --- choices saved to the config ---------------------------------------------------------

    def action_pick_theme(self) -> None:
        """Search the themes; the one picked is saved to the config."""
        self.search_themes()

    def _theme_changed(self, theme: Theme) -> None:
        self.post_message(ChoiceMade("theme", theme.name))

    @on(ChoiceMade)
    def _choice_made(self, event: ChoiceMade) -> None:
        if getattr(self.config.ui, event.name) != event.value:
            setattr(self.config.ui, event.name, event.value)
            self.ui_choices.changed(event.name, event.value)

    # --- command palette ---------------------------------------------------------------------

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """Every pane and its commands, the theme, then Textual's own (keys, quit ...)."""
        for spec in self.PANES:
            yield from _pane_commands(self, spec)
        yield SystemCommand("Switch theme", "Pick a theme; it is saved", self.action_pick_theme)
        for command in super().get_system_commands(screen):
            if command.title != "Theme":  # ours above saves the choice
                yield command


def _pane_commands(app: MuxtuiApp, spec: PaneSpec) -> Iterable[SystemCommand]:
    key = key_hint(app.config.ui.keys, app.BINDINGS, f"pane-{spec.id}", spelled_out=True)
    yield SystemCommand(
        f"{spec.title} pane",
        f"{spec.description} ({key})",
        partial(app.run_action, f"show_pane('{spec.id}')"),
    )
    for command in spec.commands:
        yield SystemCommand(
            command.title, command.help, partial(app.run_pane_action, spec.id, command.action)
        )


def run_app(config: Config, paths: Paths) -> int:
    """Run the full-screen app until the person quits; returns the exit status."""
    # What the imports made lives as long as the process: frozen, no collection walks it again.
    # Collections also wait until the first frame is painted (`_start_engine` turns them back
    # on): a full one in the middle of it costs as much as laying the frame out.
    gc.freeze()
    gc.disable()
    app = MuxtuiApp(config, paths)
    app.run()
    return app.return_code or 0
