"""The engine facade: the one door the TUI, the command line and `serve` use.

Models and their servers, chat turns (recorded or not), conversations and their settings, and
events for listeners. Callers never reach into the history or the server manager themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self

from muxtui.engine.batch.facade import BatchMixin
from muxtui.engine.cache.facade import CacheMixin
from muxtui.engine.catalog import discovered_entries, remote_entries
from muxtui.engine.chat import ChatStreamer
from muxtui.engine.config import Config
from muxtui.engine.context import ContextFitter
from muxtui.engine.context.facade import ContextMixin
from muxtui.engine.conversations_facade import ConversationsMixin
from muxtui.engine.default_model import ChoiceInputs, ModelChoice, pick_default
from muxtui.engine.discovery import DiscoveryTargets
from muxtui.engine.discovery_loop import DiscoveryLoop
from muxtui.engine.errors import (
    MuxtuiError,
    UnknownModelError,
)
from muxtui.engine.events import (
    ChatEvent,
    ChatMessage,
    ChatParams,
    ChatSettings,
    ModelEntry,
    ModelsChanged,
    TurnEvent,
)
from muxtui.engine.fit.facade import FitMixin
from muxtui.engine.history import History
from muxtui.engine.local.manager import ServerManager
from muxtui.engine.monitor.facade import MonitorMixin
from muxtui.engine.monitor.monitor import Monitor
from muxtui.engine.pool import ClientPool
from muxtui.engine.redact import known_secrets, redact_error
from muxtui.engine.retry import RetryPolicy
from muxtui.engine.router import Router, Target
from muxtui.engine.serve.facade import ServeMixin
from muxtui.engine.turns import Turns

if TYPE_CHECKING:
    from pathlib import Path

    from muxtui.engine.discovery import Discovered
    from muxtui.engine.paths import Paths

log = logging.getLogger("muxtui.engine")

DEFAULT_PARAMS = ChatParams()


class Engine(
    BatchMixin,
    CacheMixin,
    ContextMixin,
    ConversationsMixin,
    FitMixin,
    MonitorMixin,
    ServeMixin,
):
    """Chat with any known model, keep history, and tell listeners what changed."""

    def __init__(
        self,
        config: Config,
        paths: Paths,
        *,
        discover: bool | None = None,
        discovery_targets: DiscoveryTargets | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        self.config = config
        self.paths = paths
        self.history = History(paths.history_db)
        self.pool = ClientPool(config.network)
        self.retry_policy = retry_policy or RetryPolicy(retries=max(0, config.network.retries))
        self._discover = config.network.discovery if discover is None else discover
        self._discovery = DiscoveryLoop(config, self.pool, self._found, discovery_targets)
        self._listeners: list[Callable[[object], None]] = []
        self.servers = ServerManager(config, paths, self._server_event)
        self.router = Router(config, lambda name: self.servers.has(name))
        self._turns = Turns(self.history, self.start, self.chat, self.check_model, self.secrets)
        self._streamer = ChatStreamer(self)
        self.context = ContextFitter(config)
        self._monitor = Monitor(config.monitor, self.servers.entries, self.emit)
        self.add_listener(self._monitor.observe)
        self._discovery_task: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False

    # --- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the history and start discovery in the background; returns at once."""
        if self._started:
            return
        self._started = True
        await self.history.open()
        if self._discover:
            self._discovery_task = asyncio.create_task(
                self._run_discovery(), name="muxtui-discovery"
            )

    async def aclose(self) -> None:
        """Stop discovery, local servers, pooled connections and the history."""
        if self._closed:
            return
        self._closed = True
        task = self._discovery_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if "batches" in self.__dict__:  # runs close their files before the pool goes
            await self.batches.aclose()
        if "serve_routes" in self.__dict__:  # serve's own upstream sessions (aiohttp)
            await self.serve_routes.aclose()
        await self._discovery.aclose()
        await self._monitor.aclose()
        await self._close_cache()
        await self.context.aclose()
        try:
            await self.servers.aclose()
        finally:
            try:
                await self.pool.aclose()
            finally:
                await self.history.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- events ------------------------------------------------------------------------------

    def add_listener(self, listener: Callable[[object], None]) -> Callable[[], None]:
        """Call `listener` with every engine event; returns the function that unsubscribes."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    def emit(self, event: object) -> None:
        """Hand an event to every listener; one failing listener does not stop the others."""
        for listener in tuple(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("engine event listener failed on %r", event)

    # --- models ------------------------------------------------------------------------------

    def list_models(self) -> list[ModelEntry]:
        """Every known model: configured, local servers, then discovered ones."""
        entries = remote_entries(self.config)
        entries += self.servers.entries()
        entries += discovered_entries(self.router.discovered_models, self.router.providers())
        seen: set[str] = set()
        unique = []
        for entry in entries:
            if entry.name not in seen:
                seen.add(entry.name)
                unique.append(entry)
        return unique

    async def default_model(self) -> ModelChoice | None:
        """The model to start on, and why: the last used one if it works, else a warm local
        server, else a configured or discovered model that answers, else the bundled one; never
        one that failed to start or cannot run here (the order: engine/default_model.py)."""
        choice = await self._pick_default(last_only=True)  # no waiting when the last one works
        if choice is None:
            await self.wait_discovered()
            if self.servers.discovery is None:
                await self.servers.refresh()  # model folders and the bundled model
            choice = await self._pick_default(last_only=False)
        return choice

    async def _pick_default(self, *, last_only: bool) -> ModelChoice | None:
        last = self.config.ui.last_model
        last_provider = None
        if last:
            with contextlib.suppress(UnknownModelError):
                last_provider = self.router.resolve(last).provider
        tools = self.servers.discovery.tools if self.servers.discovery else None
        inputs = ChoiceInputs(
            last_model=last,
            last_provider=last_provider,
            loopback=self._discovery.loopback_providers(),
            keyed=self._discovery.keyed_providers(),
            can_run_gguf=bool(tools and tools.llama_server),
        )
        return await pick_default(self.list_models(), inputs, self._answers, last_only=last_only)

    async def _answers(self, provider_name: str) -> bool:
        """Whether a provider lists its models (waiting for start-up discovery to say first)."""
        if provider_name not in self._discovery.found.answered:
            await self.wait_discovered()
        provider = self.router.providers().get(provider_name)
        return provider is not None and await self._discovery.answers(provider_name, provider)

    async def rediscover(self) -> list[ModelEntry]:
        """Look again now (the Models pane's r): model folders and PATH, then, with
        `[network] discovery` on, loopback servers, API keys and provider catalogs; returns
        the models known afterwards."""
        jobs = [self.servers.refresh()]
        if self._discover:
            jobs.append(self._discovery.run())
        for outcome in await asyncio.gather(*jobs, return_exceptions=True):
            if isinstance(outcome, Exception):
                log.error("model discovery failed", exc_info=outcome)
        return self.list_models()

    async def check_model(self, model: str) -> None:
        """Raise a one-line error unless `model` resolves and, if local, its command can start.

        Unknown names wait for discovery still running; a local model's command and model file
        are checked without starting it (`UnknownModelError`, `LocalServerError`).
        """
        primary = (await self.plan(model))[0]
        if primary.local:
            await self._check_local(primary.name)

    async def _check_local(self, name: str) -> None:
        try:
            await self.servers.check(name)
        except MuxtuiError as exc:
            raise redact_error(exc, self.secrets()) from None

    async def wait_discovered(self, timeout: float = 2.0) -> None:
        """Wait (at most `timeout` seconds) for background discovery to finish."""
        task = self._discovery_task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=timeout)

    async def rescan(self) -> None:
        """Scan the model folders and PATH again for local models and server binaries."""
        await self.servers.refresh()

    async def preload(self, name: str) -> None:
        """Start the local server of `name` now, unless it is warm already."""
        try:
            await self.servers.preload(name)
        except MuxtuiError as exc:
            raise redact_error(exc, self.secrets()) from None

    async def unload(self, name: str, *, force: bool = False) -> None:
        """Stop the local server of `name`; waits (bounded) for replies in flight unless `force`."""
        await self.servers.unload(name, force=force)

    def set_pinned(self, name: str, pinned: bool) -> None:
        """Pin (never unload automatically) or unpin a local server, until muxtui exits."""
        self.servers.set_pinned(name, pinned)

    def server_log_path(self, name: str) -> Path:
        """The log file of the local server of `name` (it may not exist yet)."""
        return self.servers.log_path(name)

    def secrets(self) -> tuple[str, ...]:
        """Every secret value muxtui knows now (keys, secret headers, local env and cmd args)."""
        providers = self.router.providers().values()
        return known_secrets(providers, self.config.local.values())

    async def _run_discovery(self) -> None:
        outcomes = await asyncio.gather(
            self._discovery.run(), self.servers.refresh(), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                log.error("model discovery failed", exc_info=outcome)
        self._discovery.start_polling()

    def _found(self, found: Discovered) -> None:
        self.router.update_discovered(found.providers, found.models)
        self._models_changed()

    def _server_event(self, event: object) -> None:
        # The manager knows only the local models; listeners get the full list instead.
        if isinstance(event, ModelsChanged):
            self._models_changed()
        else:
            self.emit(event)

    def _models_changed(self) -> None:
        self.emit(ModelsChanged(tuple(entry.name for entry in self.list_models())))

    # --- conversations -----------------------------------------------------------------------

    def run_turn(
        self,
        model: str,
        prompt: str | Sequence[ChatMessage],
        *,
        conversation_id: int | None = None,
        settings: ChatSettings | None = None,
        params: ChatParams = DEFAULT_PARAMS,
        record: bool = True,
    ) -> AsyncGenerator[TurnEvent, None]:
        """One chat turn: record the prompt, stream the reply, store how it ended.

        `prompt` is the text of the user's message (or several messages to add as given).
        `conversation_id=None` starts a conversation; an id continues it, its stored messages
        sent first (failed replies left out). `settings` (system prompt, temperature, max
        tokens) are used for this turn and saved with the conversation; None uses the ones
        saved with it (defaults for a new one). Fields set in `params` win over the settings'.
        `record=False` writes nothing (an id still supplies the context).

        Before anything is written, the model is checked: `UnknownModelError`, or
        `LocalServerError` for a local server whose command or model file is wrong, and
        `UsageError` for an empty prompt or a conversation that no longer exists.

        Events, in order: one `TurnStarted` (the conversation id and title), `ChatStatus`es
        (retries, a local server loading), `ChatDelta`s as text arrives, then `ChatFinished`,
        by which time the reply is stored as "complete" with its stats and finish reason.
        However else the turn ends, the partial reply is stored first, then:
        - a `MuxtuiError` is raised with a one-line message (secrets masked): status "error";
          a `StreamInterruptedError` carries the partial text; a `TruncatedReplyError` (the
          server ended the stream without finishing the reply) is stored as "truncated";
        - cancelling the consuming task, or closing the generator, stores it as "stopped".
        """
        return self._turns.run(
            model,
            prompt,
            conversation_id=conversation_id,
            settings=settings,
            params=params,
            record=record,
        )

    # --- chat --------------------------------------------------------------------------------

    def chat(
        self, model: str, messages: Sequence[ChatMessage], params: ChatParams = DEFAULT_PARAMS
    ) -> AsyncGenerator[ChatEvent, None]:
        """Stream one reply, unrecorded: `ChatStatus`es, `ChatDelta`s, then `ChatFinished`.

        Raises typed errors with secrets masked. Fallback models are tried in order when a
        model fails before any text arrived. Cancelling the consuming task, or closing this
        generator, closes the HTTP stream.
        """
        return self._streamer.stream(model, messages, params)

    async def plan(self, model: str) -> list[Target]:
        """Where a request for `model` goes: its target, then its fallbacks (after discovery)."""
        try:
            return self.router.plan(model)
        except UnknownModelError:
            task = self._discovery_task
            unscanned = self.servers.discovery is None
            if (task is None or task.done()) and not unscanned:
                raise
        await self.wait_discovered()  # the name may be a model discovery has yet to report
        if self.servers.discovery is None:
            await self.servers.refresh()  # model folders count even with network discovery off
        return self.router.plan(model)
