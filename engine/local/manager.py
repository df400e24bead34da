"""The local model servers muxtui keeps warm: `ServerManager`, the one door to them.

It starts a local model's command on a free loopback port when a request needs it, waits for
real readiness, shares one start among concurrent requests, and unloads servers by LRU (count
and memory budget), idle TTL or on request, never one with requests in flight and never a
pinned one. Every state change is emitted as a `ServerStateChanged` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from muxtui.engine.config import Config
from muxtui.engine.errors import LocalServerError, UnknownModelError
from muxtui.engine.events import ModelEntry, ModelsChanged, ServerState
from muxtui.engine.local.gemma import bundled_gemma_path, bundled_gemma_ready
from muxtui.engine.local.incompatible import IncompatibleRuntimes, sigill_reason
from muxtui.engine.local.lease import Lease
from muxtui.engine.local.lifecycle import Lifecycle
from muxtui.engine.local.logs import server_log_path
from muxtui.engine.local.models import (
    LocalDiscovery,
    LocalTools,
    discover,
    runtime_binary,
    spec_from_config,
)
from muxtui.engine.local.remote_owner import RemoteOwner
from muxtui.engine.local.server import LocalEndpoint, ServerRecord, StatusCallback
from muxtui.engine.monitor.procmem import tree_memory
from muxtui.engine.paths import Paths

__all__ = ["LocalEndpoint", "ServerManager", "StatusCallback"]

log = logging.getLogger(__name__)

_MEMORY_STALE_S = 1.0
S = ServerState


class ServerManager:
    """Starts, shares, evicts and stops the local model servers; emits their state changes."""

    def __init__(self, config: Config, paths: Paths, emit: Callable[[object], None]) -> None:
        self._config = config
        self._paths = paths
        self._servers: dict[str, ServerRecord] = {
            name: ServerRecord(spec_from_config(name, entry))
            for name, entry in config.local.items()
        }
        self._discovery: LocalDiscovery | None = None
        self._emit = emit
        self._life = Lifecycle(
            config,
            paths,
            lambda: self._servers,
            self._tools,
            lambda event: self._emit(event),
            self.sample_memory,
        )
        self._refresh_lock: asyncio.Lock | None = None
        self._refresh_generation = 0
        self._memory_task: asyncio.Task[None] | None = None
        self._memory_sampled_at = 0.0
        self.owner = RemoteOwner(paths.serve_state_file, lambda event: self._emit(event))
        self.owner.on_live = self._yield_to_serve

    @property
    def busy_wait_timeout(self) -> float:
        """Seconds a start or unload waits for busy servers before giving up."""
        return self._life.busy_wait_timeout

    @busy_wait_timeout.setter
    def busy_wait_timeout(self, seconds: float) -> None:
        self._life.busy_wait_timeout = seconds

    @property
    def poll_interval(self) -> float:
        """Seconds between health polls while a server starts (output triggers one at once)."""
        return self._life.poll_interval

    @poll_interval.setter
    def poll_interval(self, seconds: float) -> None:
        self._life.poll_interval = seconds

    # --- what is known -------------------------------------------------------------------------

    def has(self, name: str) -> bool:
        """Whether `name` is a `[local]` entry or a discovered local model."""
        return name in self._servers or self.owner.serves(name)

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
        timers = self._life.timers
        own = [s.entry(timers.seconds_left(s.name, now)) for s in self._servers.values()]
        return self.owner.merge(own)  # serve's rows while one runs the local servers

    def log_path(self, name: str) -> Path:
        """The log file of `name`'s server (it may not exist yet)."""
        return server_log_path(self._paths.server_log_dir, name)

    def _tools(self) -> LocalTools:
        return self._discovery.tools if self._discovery else LocalTools()

    async def refresh(self) -> None:
        """Scan for local models and tools in a thread (concurrent calls share one scan), and
        look for a running `muxtui serve`."""
        await self.owner.current()
        if self._refresh_lock is None:
            self._refresh_lock = asyncio.Lock()
        generation = self._refresh_generation
        async with self._refresh_lock:
            if self._refresh_generation != generation:
                return  # a scan finished while we waited for the lock
            found, runtimes = await asyncio.to_thread(
                _scan, self._config, self._paths, self._life.runtimes
            )
            self._merge(found, runtimes)
            self._refresh_generation += 1

    def _merge(self, found: LocalDiscovery, runtimes: dict[str, tuple[str, bool]]) -> None:
        before = list(self._servers)
        fresh: dict[str, ServerRecord] = {}
        for spec in found.models:
            server = self._servers.get(spec.name)
            if server is None:
                server = ServerRecord(spec)
            else:
                server.set_spec(spec)
            fresh[spec.name] = server
        for name, server in self._servers.items():
            if name not in fresh and (server.live or server.in_flight or server.pending):
                fresh[name] = server  # gone from disk but still running: keep until stopped
        self._servers = fresh
        self._discovery = found
        for name, (binary, incompatible) in runtimes.items():
            self._note_runtime(fresh[name], binary, incompatible)
        if list(fresh) != before:
            self._life.publish(ModelsChanged(tuple(fresh)))

    def _note_runtime(self, server: ServerRecord, binary: str, incompatible: bool) -> None:
        """Show what a scan found about `server`'s runtime: recorded incompatible, or not."""
        server.binary = binary
        was = server.incompatible
        server.incompatible = sigill_reason(server.name, binary) if incompatible else None
        if server.incompatible and server.state is S.COLD:
            self._life.set_state(server, S.FAILED, server.incompatible)
        elif was and not incompatible and server.state is S.FAILED:
            self._life.set_state(server, S.COLD, "its runtime changed; it will be tried again")

    # --- requests ------------------------------------------------------------------------------

    def acquire(
        self, name: str, on_status: StatusCallback | None = None
    ) -> AbstractAsyncContextManager[LocalEndpoint]:
        """Hold a warm server for one request, starting it first if it is cold."""
        return Lease(self, name, on_status)

    async def check(self, name: str) -> None:
        """Raise the one-line error a start of `name` would fail with, without starting it.

        Catches an unknown name, a bad `[local]` cmd, a missing binary or model file, a file
        that is not a GGUF, and a runtime known not to run on this machine.
        """
        if await self.owner.current() is not None and self.owner.serves(name):
            return
        server = await self._known(name)
        if server.ready:
            return
        bundled_missing = server.spec.bundled_model and not await asyncio.to_thread(
            bundled_gemma_ready, bundled_gemma_path(self._paths), server.spec.size_bytes
        )  # assembled on first start, from the installed extra
        await asyncio.to_thread(self._life.plan, server, check_file=not bundled_missing)

    async def _enter(self, name: str, on_status: StatusCallback | None) -> ServerRecord:
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

    def _claim(self, server: ServerRecord) -> None:
        server.in_flight += 1
        server.last_used = time.monotonic()
        self._life.timers.cancel(server.name)
        if server.state is S.WARM:
            self._life.set_state(server, S.BUSY)

    def _release(self, server: ServerRecord) -> None:
        server.in_flight = max(0, server.in_flight - 1)
        server.last_used = time.monotonic()
        if server.in_flight == 0:
            if server.state is S.BUSY:
                self._life.set_state(server, S.WARM)
            self._life.arm_ttl(server)
            self._life.notify_idle()
            if self.owner.serves(server.name):  # a serve took over while this one was busy
                self._yield_to_serve()

    async def _known(self, name: str) -> ServerRecord:
        if self._discovery is None:
            await self.refresh()
        server = self._servers.get(name)
        if server is None:
            raise UnknownModelError(name, self.names())
        return server

    async def _ensure_warm(self, server: ServerRecord, on_status: StatusCallback | None) -> None:
        """Wait until `server` is ready, joining its start or beginning one."""
        server.pending += 1
        try:
            while not server.ready:
                if self._life.closed:
                    raise LocalServerError(server.name, "muxtui is shutting down")
                task = server.start_task or self._life.begin_start(server)
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
        if await self.owner.current() is not None and self.owner.serves(name):
            await self.owner.action(name, "load")
            return
        await self._ensure_warm(await self._known(name), None)

    async def unload(self, name: str, *, force: bool = False) -> None:
        """Stop `name`'s server; waits (bounded) for requests in flight unless `force`."""
        own = self._servers.get(name)
        if self.owner.serves(name) and (own is None or own.process is None):
            await self.owner.action(name, "unload")
            return
        server = await self._known(name)
        if server.start_task is not None:
            server.abort_reason = "unloaded while starting"
            self._life.notify_idle()  # a start waiting for room notices at once
            with contextlib.suppress(Exception):
                await asyncio.shield(server.start_task)
        if server.process is None:
            if server.state is S.FAILED and not server.incompatible:
                self._life.set_state(server, S.COLD, "unloaded")
            return
        life = self._life
        deadline = time.monotonic() + life.busy_wait_timeout
        while server.in_flight and not force:
            if time.monotonic() >= deadline:
                raise LocalServerError(
                    name,
                    f"cannot unload: {server.in_flight} request(s) in flight on {name} "
                    f"after {life.busy_wait_timeout:g} s",
                )
            await life.wait_idle_change(min(1.0, deadline - time.monotonic()))
        await self._life.stop(server, "unloaded")

    def set_pinned(self, name: str, pinned: bool) -> None:
        """Pin (never unload automatically) or unpin `name`; not saved to the config."""
        server = self._servers.get(name)
        if self.owner.serves(name) and (server is None or server.process is None):
            self.owner.pin(name, pinned)
            return
        if server is None:
            raise UnknownModelError(name, self.names())
        server.pinned = pinned
        if pinned:
            self._life.timers.cancel(name)
        else:
            with contextlib.suppress(RuntimeError):  # no running loop: armed on next release
                self._life.arm_ttl(server)
        detail = "pinned" if pinned else "unpinned"
        self._life.set_state(server, server.state, detail, force=True)

    async def sample_memory(self) -> None:
        """Measure every running server's RSS (process tree) and VRAM, in a thread."""
        live = {s.process.pid: s for s in self._servers.values() if s.process is not None}
        if not live:
            return
        figures = await asyncio.to_thread(tree_memory, list(live))
        for pid, (rss, vram) in figures.items():
            server = live[pid]
            if server.process is not None and server.process.pid == pid:
                server.rss_bytes, server.vram_bytes = rss, vram
        self._memory_sampled_at = time.monotonic()

    async def aclose(self) -> None:
        """Stop every server this manager started; later requests fail."""
        try:
            await self.owner.aclose()
        finally:
            await self._life.close()

    def _yield_to_serve(self) -> None:
        """A serve took over: stop this process's idle servers of the models it runs."""
        for s in self._servers.values():
            idle = s.settled() and not (s.in_flight or s.pending)
            if s.process and idle and self.owner.serves(s.name):
                self.owner.spawn(self._unload_quietly(s.name))

    async def _unload_quietly(self, name: str) -> None:
        try:
            await self.unload(name)
        except Exception as exc:
            log.warning("stopping %s after muxtui serve took over: %s", name, exc)

    def _schedule_memory_sample(self) -> None:
        if self._memory_task is not None or self._life.closed:
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


def _scan(
    config: Config, paths: Paths, runtimes: IncompatibleRuntimes
) -> tuple[LocalDiscovery, dict[str, tuple[str, bool]]]:
    """Discover local models, and per model its runtime binary and whether it is incompatible."""
    found = discover(config, paths)
    binaries = {spec.name: runtime_binary(spec, found.tools) for spec in found.models}
    return found, {name: (b, runtimes.is_incompatible(b)) for name, b in binaries.items()}
