"""The muxtui app: header, panes in tabs, footer; the engine starts after the first frame."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar, cast

from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widget import MountError
from textual.widgets import Header, Tab, TabbedContent, TabPane, Tabs
from textual.widgets._tabs import Underline  # textual is pinned (==8.2.8)

from muxtui.engine.config import Config, update_config_file
from muxtui.engine.errors import MuxtuiError
from muxtui.engine.paths import Paths
from muxtui.themes import ThemeFileError, load_themes
from muxtui.tui.bridge import (
    DiscoveryFinished,
    EngineBridge,
    EngineFailed,
    EngineStarted,
    ModelsUpdated,
    ServerStateUpdated,
)
from muxtui.tui.chat_pane import ChatPane
from muxtui.tui.display import describe
from muxtui.tui.widgets.footer import KeysFooter
from muxtui.tui.widgets.prompt_input import PromptInput

if TYPE_CHECKING:
    from textual.theme import Theme
    from textual.timer import Timer

    from muxtui.engine.core import Engine
    from muxtui.tui.models_pane import ModelsPane

DEFAULT_THEME = "muxtui-dark"
# Seconds a changed choice (theme, model) waits before the config is written, so a burst of
# changes is one write.
SAVE_AFTER_S = 0.3
# How long the chat pane says "looking for models" before it shows how to add one; local
# probes give up after 0.5 s, so only remote catalogs can still be running by then.
DISCOVERY_WAIT_S = 3.0
# Seconds after the first paint before the engine starts and the hidden panes mount.
FIRST_FRAME_SETTLE_S = 0.05


def _load_engine_class() -> type[Engine]:
    """Import the engine (httpx, sqlite, backends) and the Markdown widget off the first frame."""
    from muxtui.engine.core import Engine
    from muxtui.tui.widgets import message_view  # noqa: F401  (warms the Markdown import)

    return Engine


class MuxtuiApp(App[int]):
    """Chat with local and remote models and keep local model servers warm."""

    CSS_PATH: ClassVar[str] = "app.tcss"
    AUTO_FOCUS = "#prompt"
    TITLE = "muxtui"
    SUB_TITLE = "New chat"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f2", "show_pane('chat')", "Chat", id="pane-chat", tooltip="Show the Chat pane"),
        Binding(
            "f3", "show_pane('models')", "Models", id="pane-models", tooltip="Show the Models pane"
        ),
        Binding("ctrl+t", "pick_theme", "Theme", id="pick-theme", tooltip="Switch theme"),
    ]

    def __init__(self, config: Config, paths: Paths, engine: Engine | None = None) -> None:
        super().__init__()
        self.config = config
        self.paths = paths
        self.engine: Engine | None = engine
        self.engine_started = False
        self.bridge = EngineBridge(self)
        self._save_timer: Timer | None = None
        self._theme_file_error = ""
        try:
            for theme in load_themes():
                self.register_theme(theme)
        except ThemeFileError as exc:
            self._theme_file_error = str(exc)
        wanted = config.ui.theme
        self.theme = wanted if wanted in self.available_themes else self._fallback_theme()
        if config.ui.keys:
            self.set_keymap(config.ui.keys)

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
        """Header, the panes as tabs, and the footer with key hints."""
        yield Header(show_clock=False, icon="◆")
        with TabbedContent(id="panes", initial="chat"):
            with TabPane("Chat", id="chat"):
                yield ChatPane(self.config, self.paths.config_file, id="chat-pane")
            # The Models pane is mounted after the first frame (see `_after_first_frame`).
            yield TabPane("Models", id="models")
        yield KeysFooter()

    async def on_mount(self) -> None:
        """Save theme changes, report a broken theme file, start the engine after the frame."""
        # Focus the prompt and compose the footer's keys now, so the first frame has them
        # (Textual would focus the prompt as the screen resumes, and the footer would show
        # its keys a refresh or two after the first frame).
        self.screen.set_focus(self.query_one("#prompt", PromptInput), scroll_visible=False)
        await self.query_one(KeysFooter).show_keys()
        self._place_tab_underline()
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
        self.call_after_refresh(self.set_timer, FIRST_FRAME_SETTLE_S, self._after_first_frame)

    def _place_tab_underline(self) -> None:
        """Put the tabs' underline under the active tab before the first frame.

        Textual places it a refresh after the first frame, once the tabs are laid out: a second
        visible change. Tabs are `width: auto` in a row, so the place follows from the labels and
        padding; Textual's own placement then sets the same values (no change, no repaint).
        """
        tabs = self.query_one("#panes Tabs", Tabs)
        x = 0
        for tab in tabs.query("#tabs-list > Tab").results(Tab):
            if not tab.display:
                continue
            gutter = tab.styles.gutter
            if tab.has_class("-active"):
                underline = tabs.query_one(Underline)
                underline.highlight_start = x + gutter.left
                underline.highlight_end = x + gutter.left + tab.label.cell_length
                return
            x += gutter.width + tab.styles.margin.width + tab.label.cell_length

    async def _after_first_frame(self) -> None:
        """Start the engine, then mount the hidden panes (their imports and widgets cost ~60 ms)."""
        self._start_engine()
        from muxtui.tui.models_pane import ModelsPane

        with contextlib.suppress(MountError):  # the app is already closing
            await self.query_one("#models", TabPane).mount(
                ModelsPane(self.config, id="models-pane")
            )

    # --- engine ------------------------------------------------------------------------------

    def _start_engine(self) -> None:
        self.run_worker(self._run_engine_start(), group="engine", exit_on_error=False)

    async def _run_engine_start(self) -> None:
        """Create (if needed) and start the engine; history and discovery happen here."""
        try:
            if self.engine is None:
                engine_class = await asyncio.to_thread(_load_engine_class)
                self.engine = engine_class(self.config, self.paths)
            self.bridge.attach(self.engine)
            await self.engine.start()
        except Exception as exc:  # whatever it is, say so in the pane instead of failing silently
            self.post_message(EngineFailed(describe(exc)))
            self.post_message(DiscoveryFinished())
            return
        self.post_message(EngineStarted())
        await self.engine.wait_discovered(timeout=DISCOVERY_WAIT_S)
        self.post_message(DiscoveryFinished())

    @on(EngineStarted)
    async def _engine_started(self) -> None:
        assert self.engine is not None
        self.engine_started = True
        await self.chat_pane.use_engine(self.engine)
        for models_pane in self.models_panes:
            models_pane.use_engine(self.engine)

    def on_models_pane_mounted(self, event: ModelsPane.Mounted) -> None:
        """Hand the engine to the Models pane once it is mounted (after the first frame)."""
        if self.engine_started and self.engine is not None:
            event.pane.use_engine(self.engine)

    @on(DiscoveryFinished)
    def _discovery_finished(self) -> None:
        self.chat_pane.discovery_finished()
        for models_pane in self.models_panes:
            models_pane.refresh_models()

    @on(EngineFailed)
    def _engine_failed(self, event: EngineFailed) -> None:
        self.chat_pane.engine_failed(event.error)
        self.notify(event.error, title="muxtui could not start", severity="error", timeout=30)

    @on(ServerStateUpdated)
    @on(ModelsUpdated)
    def _models_changed(self) -> None:
        self.chat_pane.refresh_models()
        for models_pane in self.models_panes:
            models_pane.refresh_models()

    async def on_unmount(self) -> None:
        """Write a pending config change and close the engine (stopping its servers)."""
        if self._save_timer is not None:
            self._save_timer.stop()
            self._save_timer = None
            self._save_config()  # the app is closing: no one would see an error now
        self.bridge.detach()
        if self.engine is not None:
            await self.engine.aclose()

    # --- panes -------------------------------------------------------------------------------

    @property
    def chat_pane(self) -> ChatPane:
        """The chat pane."""
        return self.query_one(ChatPane)

    @property
    def models_panes(self) -> list[ModelsPane]:
        """The Models pane, once it is mounted (after the first frame), as a list of zero or one."""
        return cast("list[ModelsPane]", list(self.query("ModelsPane")))

    def action_show_pane(self, pane: str) -> None:
        """Switch to a pane by id and focus its main widget."""
        self.query_one(TabbedContent).active = pane
        target = "#prompt" if pane == "chat" else "#model-table"
        for widget in self.query(target):
            widget.focus()

    # --- choices saved to the config ---------------------------------------------------------

    def action_pick_theme(self) -> None:
        """Search the themes; the one picked is saved to the config."""
        self.search_themes()

    def _theme_changed(self, theme: Theme) -> None:
        if theme.name != self.config.ui.theme:
            self.config.ui.theme = theme.name
            self._schedule_save()

    @on(ChatPane.ModelChosen)
    def _model_chosen(self, event: ChatPane.ModelChosen) -> None:
        if event.model != self.config.ui.last_model:
            self.config.ui.last_model = event.model
            self._schedule_save()

    def _schedule_save(self) -> None:
        if self._save_timer is not None:
            self._save_timer.stop()
        self._save_timer = self.set_timer(SAVE_AFTER_S, self._save_in_thread)

    def _save_in_thread(self) -> None:
        self._save_timer = None
        self.run_worker(self._save_worker, thread=True, group="save-config", exit_on_error=False)

    def _save_worker(self) -> None:
        if error := self._save_config():
            self.call_from_thread(
                self.notify, error, title="settings not saved", severity="warning"
            )

    def _save_config(self) -> str:
        """Write the config file (atomic, mode 0600); returns what went wrong, if anything."""
        try:
            ui = self.config.ui
            update_config_file(
                self.paths.config_file, "ui", {"theme": ui.theme, "last_model": ui.last_model}
            )
        except OSError as exc:
            return f"could not save {self.paths.config_file}: {exc.strerror or exc}"
        except MuxtuiError as exc:
            return str(exc)
        return ""

    # --- command palette ---------------------------------------------------------------------

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """The main actions first, then Textual's own (theme, keys, quit ...)."""
        chat = self.chat_pane

        def on_chat(action: str) -> None:
            self.action_show_pane("chat")
            self.call_after_refresh(self.run_action, action, chat)

        yield SystemCommand("New chat", "Start a new conversation", lambda: on_chat("new_chat"))
        yield SystemCommand(
            "Switch model",
            "Pick the model for the chat (fuzzy search)",
            lambda: on_chat("pick_model"),
        )
        if chat.turn is not None:
            yield SystemCommand("Stop reply", "Stop the streaming reply", chat.action_stop)
        yield SystemCommand("Copy last reply", "Copy the last reply", chat.action_copy_reply)
        yield SystemCommand(
            "Chat settings",
            "System prompt, temperature and max tokens",
            lambda: on_chat("toggle_settings"),
        )
        yield SystemCommand("Switch theme", "Pick a theme; it is saved", self.action_pick_theme)
        yield SystemCommand(
            "Chat pane", "Show the Chat pane (F2)", lambda: self.action_show_pane("chat")
        )
        yield SystemCommand(
            "Models pane",
            "Show local and remote models; preload, unload, pin (F3)",
            lambda: self.action_show_pane("models"),
        )
        for command in super().get_system_commands(screen):
            if command.title != "Theme":
                yield command


def run_app(config: Config, paths: Paths) -> int:
    """Run the full-screen app until the person quits; returns the exit status."""
    app = MuxtuiApp(config, paths)
    app.run()
    return app.return_code or 0
