"""The engine facade the TUI and the command line use: models, chat, history, events."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from muxtui.engine.backends.base import (
    Backend,
    ChatRequest,
    Endpoint,
    StreamEnd,
)
from muxtui.engine.backends.ollama import OllamaBackend
from muxtui.engine.backends.openai import OpenAIBackend
from muxtui.engine.catalog import configured_entries
from muxtui.engine.config import Config
from muxtui.engine.discovery import DiscoveryTargets, discover
from muxtui.engine.errors import (
    AuthError,
    BadRequestError,
    LocalServerError,
    ProviderError,
    StreamInterruptedError,
    UnknownModelError,
)
from muxtui.engine.events import (
    ChatDelta,
    ChatEvent,
    ChatFinished,
    ChatMessage,
    ChatParams,
    ChatStats,
    ChatStatus,
    ModelEntry,
    ModelsChanged,
    ServerState,
)
from muxtui.engine.history import History
from muxtui.engine.pool import ClientPool
from muxtui.engine.retry import (
    ATTEMPT_FAILURES,
    AttemptFailure,
    RetryPolicy,
    classify,
    interrupted,
    retry_delay,
)
from muxtui.engine.router import Router, Target
from muxtui.engine.servers import LocalEndpoint, ServerManager

if TYPE_CHECKING:
    from muxtui.engine.batch.forward import Reply
    from muxtui.engine.batch.jobs import BatchJob, BatchJobs
    from muxtui.engine.batch.runner import BatchSpec, BatchSummary
    from muxtui.engine.discovery import Discovered
    from muxtui.engine.events import BatchProgress
    from muxtui.engine.paths import Paths

log = logging.getLogger("muxtui.engine")

DEFAULT_PARAMS = ChatParams()

BACKENDS: dict[str, type[Backend]] = {"openai": OpenAIBackend, "ollama": OllamaBackend}

# Errors the person must fix; trying a fallback model would only hide them.
_NO_FALLBACK = (AuthError, BadRequestError, StreamInterruptedError)


class Engine:
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
        self._discovery_targets = discovery_targets
        self._listeners: list[Callable[[object], None]] = []
        self.servers = ServerManager(config, paths, self._server_event)
        self.router = Router(config, lambda name: self.servers.has(name))
        self._backends: dict[tuple[str, str, str, str], Backend] = {}
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
        entries = configured_entries(self.config)
        entries += self.servers.entries()
        entries += [
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
            for model in self.router.discovered_models
        ]
        seen: set[str] = set()
        unique = []
        for entry in entries:
            if entry.name not in seen:
                seen.add(entry.name)
                unique.append(entry)
        return unique

    def default_model(self) -> str | None:
        """The model to start on: the last one used if it still resolves, else the first."""
        last = self.config.ui.last_model
        if last:
            with contextlib.suppress(UnknownModelError):
                self.router.resolve(last)
                return last
        models = self.list_models()
        return models[0].name if models else None

    async def check_model(self, model: str) -> None:
        """Raise `UnknownModelError` unless `model` resolves (after discovery, if still running)."""
        await self._plan(model)

    async def wait_discovered(self, timeout: float = 2.0) -> None:
        """Wait (at most `timeout` seconds) for background discovery to finish."""
        task = self._discovery_task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=timeout)

    async def _run_discovery(self) -> None:
        def publish(found: Discovered) -> None:
            self.router.update_discovered(found.providers, found.models)
            self._models_changed()

        outcomes = await asyncio.gather(
            discover(self.config, self.pool, publish, self._discovery_targets),
            self.servers.refresh(),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                log.error("model discovery failed", exc_info=outcome)

    def _server_event(self, event: object) -> None:
        # The manager knows only the local models; listeners get the full list instead.
        if isinstance(event, ModelsChanged):
            self._models_changed()
        else:
            self.emit(event)

    def _models_changed(self) -> None:
        self.emit(ModelsChanged(tuple(entry.name for entry in self.list_models())))

    # --- chat --------------------------------------------------------------------------------

    async def chat(
        self, model: str, messages: Sequence[ChatMessage], params: ChatParams = DEFAULT_PARAMS
    ) -> AsyncGenerator[ChatEvent, None]:
        """Stream one reply: `ChatStatus`es, `ChatDelta`s, then `ChatFinished`; raises typed errors.

        Fallback models are tried in order when a model fails before any text arrived.
        Cancelling the consuming task, or closing this generator, closes the HTTP stream.
        """
        if not self._started:
            await self.start()
        turn = _Turn(time.monotonic())
        parts = turn.parts
        targets = await self._plan(model)
        request_messages = tuple(messages)
        for position, target in enumerate(targets):
            try:
                async with contextlib.AsyncExitStack() as held:
                    fixed_endpoint = None
                    if target.local:
                        lease: list[LocalEndpoint] = []
                        async with aclosing(self._hold_local(target, held, lease)) as statuses:
                            async for status in statuses:
                                yield status
                        local = lease[0]
                        fixed_endpoint = Endpoint(
                            target.name, local.base_url.rstrip("/"), local=True
                        )
                        target = replace(target, model_id=local.model_id or target.model_id)
                    request = ChatRequest(target.model_id, request_messages, params)
                    # The attempts are inlined rather than a generator of their own: every
                    # generator layer costs each streamed token another resume.
                    attempt = 0
                    while True:
                        endpoint = fixed_endpoint or self.router.pick(target)
                        health = self.router.health(endpoint.base_url)
                        backend = self._backend(target.kind, endpoint, target.max_connections)
                        failure = None
                        health.in_flight += 1
                        try:
                            stream = (
                                backend.stream_chat(request)
                                if params.stream
                                else _whole_reply(backend, request)
                            )
                            async with aclosing(stream):
                                async for item in stream:
                                    if isinstance(item, ChatDelta):
                                        if not parts:
                                            turn.first_at = time.monotonic()
                                        parts.append(item.text)
                                        yield item
                                    else:
                                        turn.end = item
                        except ATTEMPT_FAILURES as exc:
                            failure = classify(exc, endpoint)
                        finally:
                            health.in_flight -= 1
                        if failure is None:
                            health.succeeded()
                            turn.ended_at = time.monotonic()
                            turn.provider = "local" if target.local else endpoint.provider
                            break
                        health.failed(self.retry_policy)
                        delay = self._retry_delay(failure, endpoint, attempt, turn)
                        attempt += 1
                        yield ChatStatus(
                            f"{failure.error}; retrying in {delay:.1f} s "
                            f"({attempt}/{self.retry_policy.retries})"
                        )
                        await asyncio.sleep(delay)
            except (ProviderError, LocalServerError) as exc:
                last = position == len(targets) - 1
                if last or parts or isinstance(exc, _NO_FALLBACK):
                    raise
                yield ChatStatus(f"{exc}; trying {targets[position + 1].name}")
                continue
            yield ChatFinished(turn.text(), turn.stats(target.name), turn.finish_reason())
            return

    async def _plan(self, model: str) -> list[Target]:
        try:
            return self.router.plan(model)
        except UnknownModelError:
            task = self._discovery_task
            if task is None or task.done():
                raise
        await self.wait_discovered()  # the name may be a model discovery has yet to report
        return self.router.plan(model)

    def _backend(self, kind: str, endpoint: Endpoint, max_connections: int) -> Backend:
        key = (kind, endpoint.provider, endpoint.base_url, endpoint.api_key)
        backend = self._backends.get(key)
        if backend is None:
            client = self.pool.client(endpoint.base_url, max_connections)
            backend = self._backends[key] = BACKENDS[kind](client, endpoint)
        return backend

    def _retry_delay(
        self, failure: AttemptFailure, endpoint: Endpoint, attempt: int, turn: _Turn
    ) -> float:
        """Seconds to wait before trying again, or the error to raise when it must not be."""
        if turn.parts:
            raise interrupted(failure, endpoint, turn.text())
        later = "try again then, or give the model fallbacks in the config"
        return retry_delay(self.retry_policy, failure, endpoint, attempt, later)

    async def _hold_local(
        self, target: Target, held: contextlib.AsyncExitStack, lease: list[LocalEndpoint]
    ) -> AsyncGenerator[ChatStatus, None]:
        """Start (or join) the local server, forwarding its progress, and hold it in `held`."""
        statuses: list[str] = []
        wake = asyncio.Event()

        def on_status(message: str) -> None:
            statuses.append(message)
            wake.set()

        manager = self.servers.acquire(target.name, on_status=on_status)
        entering = asyncio.ensure_future(manager.__aenter__())
        try:
            while not entering.done():
                waiter = asyncio.ensure_future(wake.wait())
                try:
                    await asyncio.wait({entering, waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                wake.clear()
                while statuses:
                    yield ChatStatus(statuses.pop(0))
        except BaseException:
            if not entering.done():
                entering.cancel()
                await asyncio.gather(entering, return_exceptions=True)
            elif not entering.cancelled() and entering.exception() is None:
                await manager.__aexit__(None, None, None)
            raise
        lease.append(entering.result())
        held.push_async_exit(manager)
        while statuses:
            yield ChatStatus(statuses.pop(0))

    # --- batches (engine/batch) --------------------------------------------------------------

    @functools.cached_property
    def batches(self) -> BatchJobs:
        """This engine's batch runs: start, watch, cancel (the Batch pane, `muxtui batch`)."""
        from muxtui.engine.batch.jobs import BatchJobs

        return BatchJobs(self)

    def start_batch(self, spec: BatchSpec) -> BatchJob:
        """Start a batch in the background; the handle gives its progress and cancels it."""
        return self.batches.start(spec)

    async def run_batch(
        self, spec: BatchSpec, on_progress: Callable[[BatchProgress], None] | None = None
    ) -> BatchSummary:
        """Run a batch to its end in the calling task; cancelling the task stops it cleanly."""
        return await self.batches.run(spec, on_progress)

    async def forward_chat(self, model: str, body: Mapping[str, Any]) -> Reply:
        """Send one chat body as given, not streamed, to `model` with retries; the reply as sent."""
        return await self.batches.forward_chat(model, body)


async def _whole_reply(
    backend: Backend, request: ChatRequest
) -> AsyncGenerator[ChatDelta | StreamEnd, None]:
    """A non-streaming request, shaped like a stream of one delta."""
    completion = await backend.complete(request)
    if completion.text:
        yield ChatDelta(completion.text)
    yield completion.end


@dataclass
class _Turn:
    """What one chat turn has produced so far, shared by its attempts."""

    started_at: float
    parts: list[str] = field(default_factory=list)
    first_at: float = 0.0
    ended_at: float = 0.0
    end: StreamEnd | None = None
    provider: str = ""

    def text(self) -> str:
        return "".join(self.parts)

    def finish_reason(self) -> str:
        return self.end.finish_reason if self.end is not None else "stop"

    def stats(self, model: str) -> ChatStats:
        end = self.end
        ended = self.ended_at or time.monotonic()
        completion = len(self.parts)
        prompt = 0
        rate = None
        if end is not None:
            completion = end.completion_tokens if end.completion_tokens is not None else completion
            prompt = end.prompt_tokens or 0
            rate = end.tokens_per_s
        if rate is None:
            generating = ended - self.first_at if self.first_at else 0.0
            if completion > 1 and generating > 0.001:
                rate = completion / generating
            elif completion and ended > self.started_at:
                rate = completion / (ended - self.started_at)
            else:
                rate = 0.0
        return ChatStats(
            model=model,
            provider=self.provider,
            prompt_tokens=prompt,
            completion_tokens=completion,
            ttft_s=(self.first_at - self.started_at) if self.first_at else 0.0,
            tokens_per_s=rate,
            total_s=ended - self.started_at,
        )
